/**
 * The encrypted backup file format (version 1): a 64-byte header followed by
 * records, each one chunk of at most `chunkSize` plaintext bytes sealed with
 * AES-256-GCM. Streaming both ways: neither side ever holds more than one
 * chunk, so a 100 GiB dump needs ~2 MiB of memory.
 *
 * Why chunks and not one GCM stream: GCM only authenticates at the very end, so
 * a single-shot stream would hand unauthenticated plaintext to pg_restore for
 * the whole file. Sealing each chunk means every byte released downstream has
 * passed its tag; the chunk index in the nonce and the AAD stops reordering and
 * dropping chunks, and the final-chunk flag in the AAD stops truncation at a
 * chunk boundary (the last surviving chunk was sealed as "not final").
 *
 * Layout (all integers big-endian; see ops/backup/README.md):
 *
 *   header (64 bytes)
 *     0  magic        8  "SHXBAK\r\n"
 *     8  version      1  1
 *     9  cipher       1  1 = AES-256-GCM, per-file key HKDF-SHA256(master, salt)
 *    10  compression  1  0 = none, 1 = gzip
 *    11  reserved     1  0
 *    12  chunkSize    4  plaintext bytes per full chunk
 *    16  keyId        8  first 8 bytes of SHA-256(master key)
 *    24  salt        32  random, HKDF salt of the per-file key
 *    56  noncePrefix  8  random
 *   record (repeated)
 *     flags 1 (0 = chunk, 1 = final chunk) | length 4 | ciphertext length | tag 16
 *   nonce(i) = noncePrefix ‖ u32(i)
 *   AAD(i)   = SHA-256(header) ‖ u64(i) ‖ u8(final)
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BackupIntegrityError } from './backup-errors';
import { keyIdOf } from './backup-key';

export const MAGIC = Buffer.from('SHXBAK\r\n', 'latin1');
export const FORMAT_VERSION = 1;
export const CIPHER_AES_256_GCM_HKDF = 1;
export const HEADER_BYTES = 64;
export const TAG_BYTES = 16;
export const RECORD_PREFIX_BYTES = 5;
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
/** A header read from disk is untrusted until the first tag checks: cap what it can make us allocate. */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const MAX_CHUNKS = 0xffff_ffff;
const FLAG_CHUNK = 0;
const FLAG_FINAL = 1;
const HKDF_INFO = Buffer.from('shieldx-backup/v1 aes-256-gcm chunk key', 'utf8');

export type Compression = 'none' | 'gzip';
const COMPRESSION_CODES: Record<Compression, number> = { none: 0, gzip: 1 };

export interface ArchiveHeader {
  readonly version: number;
  readonly compression: Compression;
  readonly chunkSize: number;
  /** 16 hex digits. */
  readonly keyId: string;
  readonly salt: Buffer;
  readonly noncePrefix: Buffer;
  /** SHA-256 of the 64 header bytes; bound into every chunk's AAD. */
  readonly hash: Buffer;
}

export function encodeHeader(fields: Omit<ArchiveHeader, 'version' | 'hash'>): Buffer {
  if (fields.salt.length !== 32) throw new Error('salt must be 32 bytes');
  if (fields.noncePrefix.length !== 8) throw new Error('noncePrefix must be 8 bytes');
  if (!Number.isInteger(fields.chunkSize) || fields.chunkSize < 1 || fields.chunkSize > MAX_CHUNK_BYTES) {
    throw new Error(`chunkSize must be an integer in [1, ${MAX_CHUNK_BYTES}]`);
  }
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt8(FORMAT_VERSION, 8);
  header.writeUInt8(CIPHER_AES_256_GCM_HKDF, 9);
  header.writeUInt8(COMPRESSION_CODES[fields.compression], 10);
  header.writeUInt8(0, 11);
  header.writeUInt32BE(fields.chunkSize, 12);
  Buffer.from(fields.keyId, 'hex').copy(header, 16);
  fields.salt.copy(header, 24);
  fields.noncePrefix.copy(header, 56);
  return header;
}

export function decodeHeader(header: Buffer): ArchiveHeader {
  if (header.length < HEADER_BYTES) {
    throw new BackupIntegrityError('TRUNCATED', `file is ${header.length} bytes, shorter than the ${HEADER_BYTES}-byte header`);
  }
  if (!header.subarray(0, 8).equals(MAGIC)) {
    throw new BackupIntegrityError('NOT_AN_ARCHIVE', 'not a ShieldX backup archive (bad magic bytes)');
  }
  const version = header.readUInt8(8);
  if (version !== FORMAT_VERSION) {
    throw new BackupIntegrityError('UNSUPPORTED_FORMAT', `archive format version ${version} is not supported (this tool reads ${FORMAT_VERSION})`);
  }
  const cipher = header.readUInt8(9);
  if (cipher !== CIPHER_AES_256_GCM_HKDF) throw new BackupIntegrityError('UNSUPPORTED_FORMAT', `unknown cipher id ${cipher}`);
  const code = header.readUInt8(10);
  const compression = (Object.keys(COMPRESSION_CODES) as Compression[]).find((c) => COMPRESSION_CODES[c] === code);
  if (!compression) throw new BackupIntegrityError('UNSUPPORTED_FORMAT', `unknown compression id ${code}`);
  const chunkSize = header.readUInt32BE(12);
  if (chunkSize < 1 || chunkSize > MAX_CHUNK_BYTES) {
    throw new BackupIntegrityError('TAMPERED', `header chunk size ${chunkSize} is out of range: header damaged`);
  }
  const bytes = Buffer.from(header.subarray(0, HEADER_BYTES));
  return {
    version,
    compression,
    chunkSize,
    keyId: bytes.subarray(16, 24).toString('hex'),
    salt: bytes.subarray(24, 56),
    noncePrefix: bytes.subarray(56, 64),
    hash: createHash('sha256').update(bytes).digest(),
  };
}

function chunkKey(masterKey: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, salt, HKDF_INFO, 32));
}

function nonceFor(prefix: Buffer, index: number): Buffer {
  const nonce = Buffer.alloc(12);
  prefix.copy(nonce, 0);
  nonce.writeUInt32BE(index, 8);
  return nonce;
}

function aadFor(headerHash: Buffer, index: number, final: boolean): Buffer {
  const aad = Buffer.alloc(32 + 8 + 1);
  headerHash.copy(aad, 0);
  aad.writeBigUInt64BE(BigInt(index), 32);
  aad.writeUInt8(final ? 1 : 0, 40);
  return aad;
}

export interface EncryptOptions {
  readonly key: Buffer;
  readonly compression: Compression;
  readonly chunkSize?: number;
}

/**
 * Plaintext in, archive bytes out. A full chunk is held back until the next
 * byte arrives (or the input ends), because only then is it known whether it is
 * the final one; an empty input still yields one (empty) final chunk.
 */
export class EncryptStream extends Transform {
  readonly header: Buffer;
  private readonly parsed: ArchiveHeader;
  private readonly subkey: Buffer;
  private readonly pending: Buffer;
  private pendingBytes = 0;
  private index = 0;
  private headerSent = false;

  constructor(options: EncryptOptions) {
    super();
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_BYTES;
    this.header = encodeHeader({
      compression: options.compression,
      chunkSize,
      keyId: keyIdOf(options.key),
      salt: randomBytes(32),
      noncePrefix: randomBytes(8),
    });
    this.parsed = decodeHeader(this.header);
    this.subkey = chunkKey(options.key, this.parsed.salt);
    this.pending = Buffer.alloc(chunkSize);
  }

  /** Chunks sealed so far (final included once the stream has ended). */
  get chunkCount(): number {
    return this.index;
  }

  private sendHeader(): void {
    if (this.headerSent) return;
    this.headerSent = true;
    this.push(this.header);
  }

  private seal(plaintext: Buffer, final: boolean): void {
    if (this.index >= MAX_CHUNKS) throw new Error(`archive would exceed ${MAX_CHUNKS} chunks: raise the chunk size`);
    const cipher = createCipheriv('aes-256-gcm', this.subkey, nonceFor(this.parsed.noncePrefix, this.index));
    cipher.setAAD(aadFor(this.parsed.hash, this.index, final));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const prefix = Buffer.alloc(RECORD_PREFIX_BYTES);
    prefix.writeUInt8(final ? FLAG_FINAL : FLAG_CHUNK, 0);
    prefix.writeUInt32BE(body.length, 1);
    this.push(Buffer.concat([prefix, body, cipher.getAuthTag()]));
    this.index += 1;
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.sendHeader();
      let offset = 0;
      while (offset < data.length) {
        if (this.pendingBytes === this.pending.length) {
          // More input exists, so the held-back full chunk is not the last.
          this.seal(this.pending, false);
          this.pendingBytes = 0;
        }
        const copied = data.copy(this.pending, this.pendingBytes, offset);
        this.pendingBytes += copied;
        offset += copied;
      }
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.sendHeader();
      this.seal(this.pending.subarray(0, this.pendingBytes), true);
      this.pendingBytes = 0;
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }
}

export interface DecryptOptions {
  readonly key: Buffer;
  /** Called once the header is parsed, before any chunk; may throw to reject the archive. */
  readonly onHeader?: (header: ArchiveHeader) => void;
}

/**
 * Archive bytes in, authenticated plaintext out. A chunk's plaintext is pushed
 * only after its tag verified; the stream errors with a BackupIntegrityError on
 * a bad tag, a missing end marker, or bytes after it.
 */
export class DecryptStream extends Transform {
  private readonly key: Buffer;
  private readonly onHeader?: (header: ArchiveHeader) => void;
  private header: ArchiveHeader | undefined;
  private subkey: Buffer | undefined;
  private queue: Buffer[] = [];
  private queued = 0;
  private index = 0;
  private finished = false;
  /** Plaintext bytes released so far. */
  plaintextBytes = 0;

  constructor(options: DecryptOptions) {
    super();
    this.key = options.key;
    this.onHeader = options.onHeader;
  }

  get archiveHeader(): ArchiveHeader | undefined {
    return this.header;
  }

  get chunkCount(): number {
    return this.index;
  }

  private takeBytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.queue[0]!;
      const used = head.copy(out, filled, 0, Math.min(head.length, n - filled));
      filled += used;
      if (used === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(used);
    }
    this.queued -= n;
    return out;
  }

  private peekBytes(n: number): Buffer {
    return this.queue.length === 1 ? this.queue[0]!.subarray(0, n) : Buffer.concat(this.queue, Math.min(this.queued, n)).subarray(0, n);
  }

  private drainRecords(): void {
    if (!this.header) {
      if (this.queued < HEADER_BYTES) return;
      const header = decodeHeader(this.takeBytes(HEADER_BYTES));
      if (header.keyId !== keyIdOf(this.key)) {
        throw new BackupIntegrityError(
          'WRONG_KEY',
          `archive was encrypted with key id ${header.keyId}, the supplied key has id ${keyIdOf(this.key)} (wrong key, or the header is damaged)`,
        );
      }
      this.onHeader?.(header);
      this.header = header;
      this.subkey = chunkKey(this.key, header.salt);
    }
    const header = this.header;
    for (;;) {
      if (this.finished) {
        if (this.queued > 0) {
          throw new BackupIntegrityError('TAMPERED', `${this.queued} unexpected byte(s) after the end-of-archive chunk: file was altered or appended to`);
        }
        return;
      }
      if (this.queued < RECORD_PREFIX_BYTES) return;
      const prefix = this.peekBytes(RECORD_PREFIX_BYTES);
      const flags = prefix.readUInt8(0);
      const length = prefix.readUInt32BE(1);
      if (flags !== FLAG_CHUNK && flags !== FLAG_FINAL) {
        throw new BackupIntegrityError('TAMPERED', `chunk ${this.index} has an invalid record flag 0x${flags.toString(16)}: file was altered`);
      }
      if (length > header.chunkSize) {
        throw new BackupIntegrityError('TAMPERED', `chunk ${this.index} claims ${length} bytes, more than the chunk size ${header.chunkSize}: file was altered`);
      }
      if (this.queued < RECORD_PREFIX_BYTES + length + TAG_BYTES) return;
      this.takeBytes(RECORD_PREFIX_BYTES);
      const body = this.takeBytes(length);
      const tag = this.takeBytes(TAG_BYTES);
      const final = flags === FLAG_FINAL;
      const decipher = createDecipheriv('aes-256-gcm', this.subkey!, nonceFor(header.noncePrefix, this.index));
      decipher.setAAD(aadFor(header.hash, this.index, final));
      decipher.setAuthTag(tag);
      let plaintext: Buffer;
      try {
        plaintext = Buffer.concat([decipher.update(body), decipher.final()]);
      } catch {
        throw new BackupIntegrityError(
          'TAMPERED',
          `chunk ${this.index} failed authentication: the archive was tampered with, reordered or corrupted`,
        );
      }
      this.index += 1;
      this.finished = final;
      this.plaintextBytes += plaintext.length;
      if (plaintext.length > 0) this.push(plaintext);
    }
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(data);
    this.queued += data.length;
    try {
      this.drainRecords();
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.drainRecords();
      if (!this.header) {
        throw new BackupIntegrityError('TRUNCATED', `archive is truncated: ${this.queued} bytes, shorter than the ${HEADER_BYTES}-byte header`);
      }
      if (!this.finished) {
        throw new BackupIntegrityError(
          'TRUNCATED',
          `archive is truncated: no end-of-archive chunk after ${this.index} chunk(s)${this.queued > 0 ? ` (${this.queued} stray bytes of a partial chunk)` : ''}`,
        );
      }
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }
}
