/**
 * The encrypted archive format on its own (no database): round trips at the
 * edges of the chunking, and every way of damaging a file is refused with the
 * right reason before any damaged byte comes out.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { expect } from 'chai';
import { DecryptStream, EncryptStream, HEADER_BYTES, RECORD_PREFIX_BYTES, TAG_BYTES, type Compression } from './archive-format';
import { BackupIntegrityError, BackupUsageError } from './backup-errors';
import { keyIdOf, loadKey } from './backup-key';
import { main } from './cli';

const CHUNK = 64;

async function encrypt(plaintext: Buffer, key: Buffer, chunkSize = CHUNK, compression: Compression = 'none'): Promise<Buffer> {
  const parts: Buffer[] = [];
  // Fed in odd-sized pieces so chunk boundaries never line up with writes.
  const pieces = (function* () {
    for (let i = 0; i < plaintext.length; i += 37) yield plaintext.subarray(i, i + 37);
  })();
  await pipeline(Readable.from(pieces), new EncryptStream({ key, chunkSize, compression }), async (source) => {
    for await (const part of source) parts.push(part as Buffer);
  });
  return Buffer.concat(parts);
}

/** Decrypts; returns what came out before any error, and the error. */
async function decrypt(archive: Buffer, key: Buffer): Promise<{ plaintext: Buffer; error?: unknown }> {
  const parts: Buffer[] = [];
  try {
    const pieces = (function* () {
      for (let i = 0; i < archive.length; i += 53) yield archive.subarray(i, i + 53);
    })();
    await pipeline(Readable.from(pieces), new DecryptStream({ key }), async (source) => {
      for await (const part of source) parts.push(part as Buffer);
    });
    return { plaintext: Buffer.concat(parts) };
  } catch (error) {
    return { plaintext: Buffer.concat(parts), error };
  }
}

function expectIntegrity(error: unknown, reason: string): void {
  expect(error, 'expected an integrity error').to.be.instanceOf(BackupIntegrityError);
  expect((error as BackupIntegrityError).reason).to.equal(reason);
}

/** Byte offsets of each record: [start, end) including prefix and tag. */
function records(archive: Buffer): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  let at = HEADER_BYTES;
  while (at < archive.length) {
    const length = archive.readUInt32BE(at + 1);
    const end = at + RECORD_PREFIX_BYTES + length + TAG_BYTES;
    out.push({ start: at, end });
    at = end;
  }
  return out;
}

describe('backup archive format', () => {
  const key = randomBytes(32);
  const data = randomBytes(CHUNK * 5 + 17);

  // Sizes around the chunk boundary (empty, one byte, exactly one chunk, one more, several) all round-trip.
  it('round-trips every size around the chunk boundary', async () => {
    for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK * 3, CHUNK * 5 + 17]) {
      const plaintext = data.subarray(0, size);
      const archive = await encrypt(plaintext, key);
      const expectedChunks = Math.max(1, Math.ceil(size / CHUNK));
      expect(records(archive), `records for ${size} bytes`).to.have.length(expectedChunks);
      const result = await decrypt(archive, key);
      expect(result.error, `size ${size}`).to.equal(undefined);
      expect(result.plaintext.equals(plaintext), `size ${size}`).to.equal(true);
    }
  });

  // Two encryptions of the same data differ (random salt and nonce prefix): no nonce is ever reused under one key.
  it('never produces the same ciphertext twice', async () => {
    const a = await encrypt(data, key);
    const b = await encrypt(data, key);
    expect(a.subarray(HEADER_BYTES).equals(b.subarray(HEADER_BYTES))).to.equal(false);
    expect(a.subarray(24, 64).equals(b.subarray(24, 64))).to.equal(false);
  });

  // Flipping one bit anywhere — header, record flag, length, ciphertext, tag — is refused.
  it('refuses a flipped bit anywhere in the file', async () => {
    const archive = await encrypt(data, key);
    const [first, second] = records(archive);
    const positions = {
      'header compression byte': 10,
      'header salt': 30,
      'header nonce prefix': 60,
      'record flag': first!.start,
      'record length': first!.start + 3,
      ciphertext: second!.start + RECORD_PREFIX_BYTES + 5,
      tag: second!.end - 1,
      'last byte': archive.length - 1,
    };
    for (const [what, offset] of Object.entries(positions)) {
      const damaged = Buffer.from(archive);
      damaged[offset]! ^= 0x01;
      const result = await decrypt(damaged, key);
      expect(result.error, what).to.be.instanceOf(BackupIntegrityError);
      expect((result.error as BackupIntegrityError).reason, what).to.be.oneOf(['TAMPERED', 'TRUNCATED', 'UNSUPPORTED_FORMAT']);
    }
  });

  // A damaged chunk releases nothing of itself: at most the authenticated chunks before it came out.
  it('releases no byte of a damaged chunk', async () => {
    const archive = await encrypt(data, key);
    const third = records(archive)[2]!;
    const damaged = Buffer.from(archive);
    damaged[third.start + RECORD_PREFIX_BYTES + 1]! ^= 0xff;
    const result = await decrypt(damaged, key);
    expectIntegrity(result.error, 'TAMPERED');
    // Whatever was delivered before the stream was torn down is a prefix of the two good chunks, never more.
    expect(result.plaintext.length).to.be.at.most(2 * CHUNK);
    expect(result.plaintext.equals(data.subarray(0, result.plaintext.length))).to.equal(true);
  });

  // Cutting the file anywhere — inside the header, at a record boundary, inside a record, just before the end — is refused as truncated.
  it('refuses a truncated file wherever it was cut', async () => {
    const archive = await encrypt(data, key);
    const recs = records(archive);
    const cuts = [0, 10, HEADER_BYTES, recs[1]!.start, recs[1]!.start + 20, recs[recs.length - 1]!.start, archive.length - 1];
    for (const cut of cuts) {
      const result = await decrypt(archive.subarray(0, cut), key);
      expectIntegrity(result.error, 'TRUNCATED');
    }
  });

  // Dropping the final record leaves a file that ends on a record boundary: the missing end marker is detected.
  it('refuses a file whose end marker was removed even at a chunk boundary', async () => {
    const exact = data.subarray(0, CHUNK * 3);
    const archive = await encrypt(exact, key);
    const recs = records(archive);
    const result = await decrypt(archive.subarray(0, recs[2]!.start), key);
    expectIntegrity(result.error, 'TRUNCATED');
    expect(result.error as Error).to.have.property('message').that.matches(/no end-of-archive chunk after 2 chunk/);
  });

  // Relabelling a non-final chunk as final (to hide a truncation) fails its tag: the flag is in the AAD.
  it('refuses a chunk relabelled as final', async () => {
    const archive = await encrypt(data, key);
    const recs = records(archive);
    const cut = Buffer.from(archive.subarray(0, recs[2]!.end));
    cut[recs[2]!.start] = 1;
    const result = await decrypt(cut, key);
    expectIntegrity(result.error, 'TAMPERED');
  });

  // Swapping two chunks fails: the chunk index is in the nonce and the AAD.
  it('refuses reordered chunks', async () => {
    const archive = await encrypt(data, key);
    const [, a, b] = records(archive);
    const swapped = Buffer.concat([archive.subarray(0, a!.start), archive.subarray(b!.start, b!.end), archive.subarray(a!.start, a!.end), archive.subarray(b!.end)]);
    expect(swapped.length).to.equal(archive.length);
    expectIntegrity((await decrypt(swapped, key)).error, 'TAMPERED');
  });

  // A chunk spliced in from another archive made with the same key fails: each file has its own derived key.
  it('refuses a chunk spliced from another archive under the same key', async () => {
    const one = await encrypt(data, key);
    const other = await encrypt(data, key);
    const r1 = records(one)[1]!;
    const r2 = records(other)[1]!;
    const spliced = Buffer.concat([one.subarray(0, r1.start), other.subarray(r2.start, r2.end), one.subarray(r1.end)]);
    expectIntegrity((await decrypt(spliced, key)).error, 'TAMPERED');
  });

  // Bytes appended after the end marker are refused.
  it('refuses data appended after the end marker', async () => {
    const archive = await encrypt(data, key);
    expectIntegrity((await decrypt(Buffer.concat([archive, Buffer.from('x')]), key)).error, 'TAMPERED');
  });

  // The wrong key is named as such (by key id) before any chunk is tried.
  it('refuses the wrong key by key id', async () => {
    const archive = await encrypt(data, key);
    const other = randomBytes(32);
    const result = await decrypt(archive, other);
    expectIntegrity(result.error, 'WRONG_KEY');
    expect((result.error as Error).message).to.include(keyIdOf(key)).and.include(keyIdOf(other));
  });

  // A file that is not an archive at all is told apart from a damaged one.
  it('refuses a file that is not an archive', async () => {
    expectIntegrity((await decrypt(randomBytes(200), key)).error, 'NOT_AN_ARCHIVE');
  });
});

describe('backup key loading', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shieldx-key-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // A key file may hold 32 raw bytes or their base64; the environment holds base64; both give the same key id.
  it('reads raw and base64 key files and the environment', () => {
    const key = randomBytes(32);
    writeFileSync(join(dir, 'raw'), key, { mode: 0o600 });
    writeFileSync(join(dir, 'b64'), `${key.toString('base64')}\n`, { mode: 0o600 });
    expect(loadKey(join(dir, 'raw')).key.equals(key)).to.equal(true);
    expect(loadKey(join(dir, 'b64')).key.equals(key)).to.equal(true);
    const fromEnv = loadKey(undefined, { SHIELDX_BACKUP_KEY: key.toString('base64') });
    expect(fromEnv.keyId).to.equal(keyIdOf(key)).and.match(/^[0-9a-f]{16}$/);
  });

  // Wrong lengths, non-base64, and no key at all are usage errors naming the source.
  it('rejects bad keys with a message naming the source', () => {
    expect(() => loadKey(undefined, { SHIELDX_BACKUP_KEY: randomBytes(16).toString('base64') })).to.throw(BackupUsageError, /SHIELDX_BACKUP_KEY decodes to 16 bytes/);
    expect(() => loadKey(undefined, { SHIELDX_BACKUP_KEY: 'not base64 !' })).to.throw(BackupUsageError, /not base64/);
    expect(() => loadKey(undefined, {})).to.throw(BackupUsageError, /--key-file/);
    expect(() => loadKey(join(dir, 'absent'))).to.throw(BackupUsageError, /cannot read key file/);
  });

  // A key file others can read still works but is flagged.
  it('warns about a group- or world-readable key file', () => {
    const path = join(dir, 'loose');
    writeFileSync(path, randomBytes(32));
    chmodSync(path, 0o644);
    expect(loadKey(path).warning).to.match(/chmod 600/);
  });

  // A key on the command line is refused (exit 2) before anything runs, in both spellings.
  it('refuses --key on the command line', async () => {
    for (const argv of [['verify', 'x', '--key', 'abc'], ['backup', '--key=abc']]) {
      const errors: string[] = [];
      const code = await main(argv, {}, () => undefined, (line) => errors.push(line));
      expect(code).to.equal(2);
      expect(errors.join('\n')).to.match(/--key is not accepted/).and.match(/--key-file/);
    }
  });
});
