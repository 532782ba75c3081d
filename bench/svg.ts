// A small SVG chart of the scenarios: one row each, the figure as a bar on its own scale, the
// bar (threshold) as a vertical line, green when it holds, red when not, grey when only reported.

export interface Scenario {
  name: string;
  figure: number | null;
  bar: string | null;
  holds: boolean | null;
  unit: string;
  details: Record<string, unknown>;
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export function chart(scenarios: Scenario[], title: string): string {
  const rowH = 34;
  const left = 330;
  const width = 900;
  const plotW = width - left - 150;
  const top = 44;
  const h = top + scenarios.length * rowH + 20;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  scenarios.forEach((s, i) => {
    const y = top + i * rowH;
    const threshold = s.bar ? Number(/[\d.]+/.exec(s.bar)?.[0]) : NaN;
    const fig = s.figure ?? 0;
    const max = Math.max(fig, Number.isFinite(threshold) ? threshold : 0) * 1.25 || 1;
    const w = Math.max(1, (fig / max) * plotW);
    const color = s.holds === null ? '#8a8a8a' : s.holds ? '#2e9d4a' : '#d0372b';
    parts.push(`<text x="12" y="${y + 17}">${esc(s.name)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 5}" width="${w.toFixed(1)}" height="18" fill="${color}"/>`);
    if (Number.isFinite(threshold)) {
      const x = left + (threshold / max) * plotW;
      parts.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${y + 1}" y2="${y + 27}" stroke="#000" stroke-dasharray="3,2"/>`);
    }
    const label = `${s.figure === null ? 'n/a' : s.figure} ${s.unit}${s.bar ? ` (bar ${s.bar})` : ''}`;
    parts.push(`<text x="${left + w + 6}" y="${y + 18}">${esc(label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
