import { isMap, isNode, isPair, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';

export type DocPath = ReadonlyArray<string | number>;

/** `api-keys[2].group`: the path as messages show it (relative to `config`). */
export function displayPath(p: DocPath): string {
  const parts = p[0] === 'config' && p.length > 1 ? p.slice(1) : p;
  let out = '';
  for (const seg of parts) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

/** Resolves document paths to 1-based line and column. */
export class Positions {
  /** `doc` parses on first use: positions are needed only for errors and warnings. */
  constructor(
    private readonly doc: () => Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  at(offset: number): { line: number; column: number } {
    const { line, col } = this.lines.linePos(offset);
    return { line, column: col };
  }

  /** The node at `p`, or the deepest existing ancestor. With `keyOf`, the position of that key. */
  of(p: DocPath, opts: { keyOf?: string } = {}): { line: number; column: number } {
    let node: unknown = this.doc().contents;
    for (const seg of p) {
      const next = childOf(node, seg);
      if (next === undefined) break;
      node = next;
    }
    if (opts.keyOf !== undefined && isMap(node)) {
      for (const item of node.items) {
        if (isPair(item) && isScalar(item.key) && item.key.value === opts.keyOf && item.key.range) {
          return this.at(item.key.range[0]);
        }
      }
    }
    if (isNode(node) && node.range) return this.at(node.range[0]);
    return { line: 1, column: 1 };
  }
}

function childOf(node: unknown, seg: string | number): Node | undefined {
  if (isMap(node)) {
    for (const item of node.items) {
      if (isPair(item) && isScalar(item.key) && item.key.value === seg) {
        return isNode(item.value) ? item.value : (item.key as Node);
      }
    }
    return undefined;
  }
  if (isSeq(node) && typeof seg === 'number') {
    const v = node.items[seg];
    return isNode(v) ? v : undefined;
  }
  return undefined;
}
