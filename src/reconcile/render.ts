import { maskKey } from '../keys/material.ts';
import type { Change, GroupView, KeyView, Plan } from './diff.ts';

const isKeyView = (v: KeyView | GroupView | undefined): v is KeyView => v !== undefined && 'group' in v;

function masked(prefix: string | null): string {
  return prefix === null ? '(hash only)' : `${prefix}…`;
}

function show(v: unknown): string {
  if (v === null || v === undefined) return 'none';
  if (typeof v === 'string') return JSON.stringify(v);
  return JSON.stringify(v);
}

function describeFields(c: Change): string {
  const parts: string[] = [];
  const before = c.before as Record<string, unknown> | undefined;
  const after = c.after as Record<string, unknown> | undefined;
  for (const f of c.fields ?? []) {
    if (f === 'key') {
      parts.push(`key ${isKeyView(c.before) ? masked(c.before.prefix) : '?'} → ${isKeyView(c.after) ? masked(c.after.prefix) : '?'}`);
    } else if (f === 'source') {
      parts.push('source api → config (adopted: now managed by the config file)');
    } else {
      parts.push(`${f} ${show(before?.[f])} → ${show(after?.[f])}`);
    }
  }
  return parts.join('; ');
}

function line(c: Change): string {
  const label = `${c.kind} ${JSON.stringify(c.name)}`;
  switch (c.action) {
    case 'create': {
      const extra = isKeyView(c.after) ? ` (group ${c.after.group}, key ${masked(c.after.prefix)})` : '';
      return `+ create ${label}${extra}`;
    }
    case 'delete': {
      const extra = isKeyView(c.before) ? ` (group ${c.before.group}, key ${masked(c.before.prefix)})` : '';
      return `- delete ${label}${extra}`;
    }
    case 'update': {
      const verb = c.adopt === true ? '~ adopt' : '~ update';
      const why = c.reason === undefined ? '' : ` (${c.reason})`;
      return `${verb} ${label}: ${describeFields(c)}${why}`;
    }
  }
}

/** The plan as text: `+ create`, `~ update`, `- delete`, `= N unchanged`. Keys are masked. */
export function renderPlan(plan: Plan): string {
  const out = plan.changes.map(line);
  const s = plan.summary;
  out.push(`= ${s.unchanged} unchanged`);
  out.push(
    plan.changes.length === 0
      ? 'No changes: the database matches the config.'
      : `Plan: ${s.create} to create, ${s.update} to update, ${s.delete} to delete.`,
  );
  return `${out.join('\n')}\n`;
}

/** The plan as a stable JSON document. */
export function planJson(plan: Plan): object {
  const { keysDeleted: _k, keysMoved: _m, configKeys: _c, ...summary } = plan.summary;
  return {
    config_file: plan.configFile,
    config_sha256: plan.configSha256,
    changes: plan.changes.map((c) => ({
      ...c,
      ...(c.before !== undefined ? { before: maskView(c.before) } : {}),
      ...(c.after !== undefined ? { after: maskView(c.after) } : {}),
    })),
    summary,
  };
}

function maskView(v: KeyView | GroupView): object {
  if (!isKeyView(v)) return v;
  const { prefix, ...rest } = v;
  return { ...rest, masked_key: maskKey(prefix) };
}
