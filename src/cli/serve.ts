export async function serveCommand(_a: string[], _io: unknown): Promise<number> { return 1; }
