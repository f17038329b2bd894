/**
 * Request bodies parsed the way a web framework would hand them to the application, so the
 * detectors (and the WAF) see the values the application sees rather than the wire encoding:
 *
 * | content type                                   | parsed as                                                    |
 * |------------------------------------------------|--------------------------------------------------------------|
 * | `application/json`, `*+json`                    | JSON: every key and string/number leaf, by key path (`body.user.name`) |
 * | `application/x-www-form-urlencoded`             | form: `+` as space, percent-decoded names and values          |
 * | `multipart/form-data; boundary=…`              | each part's name, filename and (text) content                 |
 * | `application/xml`, `text/xml`, `*+xml`          | XML: element text, CDATA and attribute values; a DOCTYPE with an ENTITY is flagged |
 * | anything else, or a body that does not parse   | raw text                                                      |
 *
 * Bounded: at most {@link BODY_FIELDS_MAX} fields and {@link BODY_DEPTH_MAX} levels of nesting;
 * whatever lies beyond (and a body that does not parse as its type says) is scanned as raw text,
 * so nothing escapes the scan by being deep or numerous. Pure: no I/O.
 */

export const BODY_FIELDS_MAX = 1_024;
export const BODY_DEPTH_MAX = 32;
const KEY_PATH_CHARS_MAX = 128;

export type BodyKind = 'json' | 'form' | 'multipart' | 'xml' | 'text';

export interface BodyField {
  /** Where the text is, e.g. `body.user.name`, `body.password`, `body.file[filename]`, `body`. */
  readonly location: string;
  /** The value (or key) as the application would read it, before scan normalisation. */
  readonly text: string;
}

export interface ParsedBody {
  readonly kind: BodyKind;
  readonly fields: readonly BodyField[];
  /** The body as a framework's parser returns it (object for JSON/form/multipart), for the WAF. */
  readonly structured: unknown;
  /** True when the body claimed a type but did not parse as it (it is then scanned as raw text). */
  readonly malformed: boolean;
  /** XML with a DOCTYPE declaring entities (XXE). */
  readonly xmlEntityDeclared: boolean;
}

export function bodyKindOf(contentType: string | undefined): BodyKind {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/json' || type.endsWith('+json') || type === 'text/json') return 'json';
  if (type === 'application/x-www-form-urlencoded') return 'form';
  if (type === 'multipart/form-data') return 'multipart';
  if (type === 'application/xml' || type === 'text/xml' || type.endsWith('+xml')) return 'xml';
  return 'text';
}

function clipPath(path: string): string {
  return path.length > KEY_PATH_CHARS_MAX ? `${path.slice(0, KEY_PATH_CHARS_MAX)}…` : path;
}

function formDecode(value: string): string {
  const spaced = value.includes('+') ? value.replace(/\+/g, ' ') : value;
  if (!spaced.includes('%')) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

function parseJson(text: string, fields: BodyField[]): { structured: unknown; ok: boolean } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { structured: undefined, ok: false };
  }
  let overflow = false;
  const walk = (node: unknown, path: string, depth: number): void => {
    if (fields.length >= BODY_FIELDS_MAX || depth > BODY_DEPTH_MAX) {
      overflow = true;
      return;
    }
    if (typeof node === 'string') fields.push({ location: clipPath(path), text: node });
    else if (typeof node === 'number' || typeof node === 'boolean') fields.push({ location: clipPath(path), text: String(node) });
    else if (Array.isArray(node)) node.forEach((item, i) => walk(item, `${path}[${i}]`, depth + 1));
    else if (node !== null && typeof node === 'object') {
      for (const [key, item] of Object.entries(node as Record<string, unknown>)) {
        if (fields.length >= BODY_FIELDS_MAX) {
          overflow = true;
          return;
        }
        // Keys are input too (NoSQL operators, prototype pollution, payloads in names).
        fields.push({ location: clipPath(`${path}{key}`), text: key });
        walk(item, `${path}.${key}`, depth + 1);
      }
    }
  };
  walk(value, 'body', 0);
  if (overflow) fields.push({ location: 'body', text });
  return { structured: value, ok: true };
}

function parseForm(text: string, fields: BodyField[]): Record<string, string | string[]> {
  const structured: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  const pairs = text.split('&');
  let i = 0;
  for (; i < pairs.length && fields.length < BODY_FIELDS_MAX; i++) {
    const pair = pairs[i]!;
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = formDecode(eq === -1 ? pair : pair.slice(0, eq));
    const value = eq === -1 ? '' : formDecode(pair.slice(eq + 1));
    fields.push({ location: clipPath(`body{key}`), text: name });
    if (value !== '') fields.push({ location: clipPath(`body.${name}`), text: value });
    const earlier = structured[name];
    structured[name] = earlier === undefined ? value : Array.isArray(earlier) ? [...earlier, value] : [earlier, value];
  }
  if (i < pairs.length) fields.push({ location: 'body', text: pairs.slice(i).join('&') });
  return structured;
}

function boundaryOf(contentType: string): string | undefined {
  const found = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType);
  return found === null ? undefined : (found[1] ?? found[2]);
}

function parseMultipart(text: string, contentType: string, fields: BodyField[]): { structured: unknown; ok: boolean } {
  const boundary = boundaryOf(contentType);
  if (boundary === undefined || !text.includes(`--${boundary}`)) return { structured: undefined, ok: false };
  const structured: Record<string, string> = Object.create(null) as Record<string, string>;
  const chunks = text.split(`--${boundary}`);
  for (let i = 1; i < chunks.length && fields.length < BODY_FIELDS_MAX; i++) {
    const chunk = chunks[i]!;
    if (chunk.startsWith('--')) break;
    const split = chunk.search(/\r?\n\r?\n/);
    const head = split === -1 ? chunk : chunk.slice(0, split);
    const body = split === -1 ? '' : chunk.slice(split).replace(/^\r?\n\r?\n/, '').replace(/\r?\n$/, '');
    const disposition = /content-disposition:[^\r\n]*/i.exec(head)?.[0] ?? '';
    const name = /\bname="([^"]*)"/i.exec(disposition)?.[1] ?? `part${i}`;
    const filename = /\bfilename="([^"]*)"/i.exec(disposition)?.[1];
    fields.push({ location: clipPath(`body{key}`), text: name });
    if (filename !== undefined) fields.push({ location: clipPath(`body.${name}[filename]`), text: filename });
    // The part's own headers (Content-Type of an upload) are input as well.
    fields.push({ location: clipPath(`body.${name}[headers]`), text: head });
    if (body !== '') fields.push({ location: clipPath(`body.${name}`), text: body });
    structured[name] = filename !== undefined ? filename : body;
  }
  return { structured, ok: true };
}

const XML_ENTITY_DECL = /<!DOCTYPE[^>[]*\[[\s\S]*?<!ENTITY/i;

function parseXml(text: string, fields: BodyField[]): { structured: unknown; ok: boolean; entityDeclared: boolean } {
  if (!/^\s*(?:<\?xml[\s\S]*?\?>\s*)?(?:<!--[\s\S]*?-->\s*)*(?:<!DOCTYPE[\s\S]*?>\s*)?</i.test(text)) return { structured: undefined, ok: false, entityDeclared: false };
  const texts: string[] = [];
  const push = (location: string, value: string): void => {
    const trimmed = value.trim();
    if (trimmed === '' || fields.length >= BODY_FIELDS_MAX) return;
    fields.push({ location: clipPath(location), text: trimmed });
    texts.push(trimmed);
  };
  // The DOCTYPE (entity declarations name their SYSTEM targets: file://, http://internal) is input too.
  const doctype = /<!DOCTYPE(?:[^>[]*\[[\s\S]*?\]\s*>|[^>]*>)/i.exec(text);
  if (doctype !== null) push('body[doctype]', doctype[0]);
  // CDATA sections are text as they stand; tags give attribute values; what lies between tags is element text.
  const token = /<!\[CDATA\[([\s\S]*?)\]\]>|<([A-Za-z_][\w:.-]*)([^>]*)>|<\/[^>]*>|<!--[\s\S]*?-->|<[!?][^>]*>|([^<]+)/g;
  let element = 'body';
  let count = 0;
  for (let m = token.exec(text); m !== null && count < BODY_FIELDS_MAX * 4; m = token.exec(text), count++) {
    if (m[1] !== undefined) push(`${element}`, m[1]);
    else if (m[2] !== undefined) {
      element = `body.${m[2]}`;
      const attributes = /([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
      for (let a = attributes.exec(m[3] ?? ''); a !== null; a = attributes.exec(m[3] ?? '')) push(`${element}[@${a[1]}]`, a[2] ?? a[3] ?? '');
    } else if (m[4] !== undefined) push(element, m[4]);
  }
  return { structured: texts, ok: true, entityDeclared: XML_ENTITY_DECL.test(text) };
}

/** Parses `text` as `contentType` says; anything that does not parse is raw text (and `malformed`). */
export function parseBody(text: string, contentType: string | undefined): ParsedBody {
  const kind = bodyKindOf(contentType);
  const fields: BodyField[] = [];
  if (text === '') return { kind, fields, structured: undefined, malformed: false, xmlEntityDeclared: false };
  const raw = (malformed: boolean): ParsedBody => ({ kind: 'text', fields: [{ location: 'body', text }], structured: text, malformed, xmlEntityDeclared: false });
  switch (kind) {
    case 'json': {
      const parsed = parseJson(text, fields);
      return parsed.ok ? { kind, fields, structured: parsed.structured, malformed: false, xmlEntityDeclared: false } : raw(true);
    }
    case 'form':
      return { kind, fields, structured: parseForm(text, fields), malformed: false, xmlEntityDeclared: false };
    case 'multipart': {
      const parsed = parseMultipart(text, contentType ?? '', fields);
      return parsed.ok ? { kind, fields, structured: parsed.structured, malformed: false, xmlEntityDeclared: false } : raw(true);
    }
    case 'xml': {
      const parsed = parseXml(text, fields);
      return parsed.ok ? { kind, fields, structured: parsed.structured, malformed: false, xmlEntityDeclared: parsed.entityDeclared } : raw(true);
    }
    default:
      return raw(false);
  }
}
