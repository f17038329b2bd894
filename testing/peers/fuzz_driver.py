#!/usr/bin/python3
"""Fuzzes gRPC methods from a peer that is not grpc-js (Debian's python3-grpcio, C-core).

    fuzz_driver.py <host:port> <bearer key> <seed> <calls per method> <method path>...

Bodies are random bytes, bit-flipped valid-looking varint/length-delimited fields, empty, and
oversized strings, with random metadata (values up to 70,000 bytes, past the 64 KiB that used to
stall a connection; up to 200 entries) and deadlines of 2 s. A
thread checks grpc.health.v1.Health/Check every 100 ms on its own channel and records the worst
latency. Prints one JSON object: per-code counts, calls without a status, INTERNAL/UNKNOWN
details, worst health latency (ms).
"""
import json
import random
import sys
import threading
import time

import grpc

addr, key, seed, per_method = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
methods = sys.argv[5:]
rng = random.Random(seed)
ident = lambda b: b


def body():
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:
        return b""
    if kind == 2:  # a string field with NUL / invalid UTF-8 / long text
        text = rng.choice([b"\x00\x00x", b"\xff\xfe", b"a" * 5000, "名前\u0000".encode()])
        field = rng.randrange(1, 12)
        return bytes([(field << 3) | 2]) + encode_varint(len(text)) + text
    if kind == 3:  # a timestamp-like nested message with an extreme seconds value
        seconds = rng.choice([-(2 ** 63), 2 ** 63 - 1, 8_640_000_000_001, 253_402_300_800])
        inner = b"\x08" + encode_varint(seconds & 0xFFFFFFFFFFFFFFFF)
        field = rng.randrange(1, 8)
        return bytes([(field << 3) | 2]) + encode_varint(len(inner)) + inner
    base = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
    base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
    return bytes(base)


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def metadata():
    md = [("authorization", f"Bearer {key}")]
    if rng.random() < 0.1:
        # 20000: over GRPC_MAX_METADATA_BYTES (the stream is reset: RESOURCE_EXHAUSTED); 70000:
        # past nghttp2's 64 KiB per field (the connection is closed: UNAVAILABLE), never a hang.
        md.append(("x-fuzz", "v" * rng.choice([100, 4000, 20000, 70000])))
    if rng.random() < 0.05:
        md.extend((f"x-many-{i}", "1") for i in range(rng.choice([50, 200])))
    return md


worst_health_ms = 0.0
health_failures = []
stop = threading.Event()


def health():
    global worst_health_ms
    channel = grpc.insecure_channel(addr)
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=ident, response_deserializer=ident)
    while not stop.is_set():
        started = time.monotonic()
        try:
            check(b"", timeout=5)
        except grpc.RpcError as e:
            health_failures.append(str(e.code()))
        worst_health_ms = max(worst_health_ms, (time.monotonic() - started) * 1000)
        stop.wait(0.1)
    channel.close()


thread = threading.Thread(target=health)
thread.start()
codes = {}
no_status = 0
internal = []
calls = 0
channel = grpc.insecure_channel(addr, options=[("grpc.enable_retries", 0)])
started_all = time.monotonic()
for path in methods:
    for _ in range(per_method):
        calls += 1
        payload = body()
        started = time.monotonic()
        try:
            if path.endswith("Stream") or path.endswith("IngestSamples") or path.endswith("WatchRollout"):
                fn = channel.stream_stream(path, request_serializer=ident, response_deserializer=ident)
                for _answer in fn(iter([payload, body()]), metadata=metadata(), timeout=2):
                    pass
            else:
                fn = channel.unary_unary(path, request_serializer=ident, response_deserializer=ident)
                fn(payload, metadata=metadata(), timeout=2)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
            if code in ("INTERNAL", "UNKNOWN"):
                internal.append({"method": path, "details": e.details()})
        if time.monotonic() - started > 3.5:
            no_status += 1
        codes[code] = codes.get(code, 0) + 1
stop.set()
thread.join()
channel.close()
print(json.dumps({
    "calls": calls,
    "seconds": round(time.monotonic() - started_all, 2),
    "codes": codes,
    "no_status": no_status,
    "internal": internal,
    "worst_health_ms": round(worst_health_ms, 1),
    "health_failures": health_failures,
}))
