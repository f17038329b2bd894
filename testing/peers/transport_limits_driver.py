#!/usr/bin/python3
"""Oversized metadata from a peer that is not grpc-js (Debian's python3-grpcio, C-core).

    transport_limits_driver.py <host:port> multiplexed <metadata spec> <deadline s>
    transport_limits_driver.py <host:port> repeat <metadata spec> <deadline s> <count>

A metadata spec is `<entries>x<bytes>`: that many `x-big-<i>` entries, each value `bytes` long
(`1x70000` is one 70,000-byte value, the issue's case; `4x5000` four values of 5,000 bytes).

multiplexed: on one channel (one HTTP/2 connection), opens a ServerReflectionInfo stream (bidi)
and exchanges one message on it, makes the oversized Health/Check call, then sends the stream's
second message and makes an ordinary Check on the same channel. Reports the oversized call's code
and seconds, whether the stream's second message was answered (or how the stream ended), and
the ordinary call's code.

repeat: `count` times, a fresh channel with one oversized call, closed after it (the client
leaves). Reports each call's code and seconds.

Prints one JSON object.
"""
import json
import queue
import sys
import threading
import time

import grpc

addr, mode, spec, deadline = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
entries, size = (int(part) for part in spec.split("x"))
ident = lambda b: b
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
LIST_SERVICES = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}


def oversized():
    return [(f"x-big-{i}", "v" * size) for i in range(entries)]


def call(channel, metadata, timeout):
    check = channel.unary_unary(HEALTH_CHECK, request_serializer=ident, response_deserializer=ident)
    started = time.monotonic()
    try:
        check(b"", metadata=metadata, timeout=timeout)
        code, details = "OK", ""
    except grpc.RpcError as e:
        code, details = e.code().name, e.details()
    return {"code": code, "details": details, "seconds": round(time.monotonic() - started, 3)}


def multiplexed():
    channel = grpc.insecure_channel(addr, options=[("grpc.enable_retries", 0)])
    requests = queue.Queue()
    answers = queue.Queue()

    def feed():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    stream = channel.stream_stream(REFLECTION, request_serializer=ident, response_deserializer=ident)(feed(), timeout=60)

    def read():
        try:
            for answer in stream:
                answers.put(("answer", len(answer)))
            answers.put(("end", "OK"))
        except grpc.RpcError as e:
            answers.put(("end", e.code().name))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    requests.put(LIST_SERVICES)
    first = answers.get(timeout=10)
    result = {"stream_first": first[0]}
    result["oversized"] = call(channel, oversized(), deadline)
    requests.put(LIST_SERVICES)
    try:
        kind, value = answers.get(timeout=10)
        result["stream_second"] = kind if kind == "answer" else f"ended {value}"
    except queue.Empty:
        result["stream_second"] = "no answer in 10 s"
    result["ordinary"] = call(channel, [], 10)
    requests.put(None)
    stream.cancel()
    channel.close()
    return result


def repeat(count):
    calls = []
    for _ in range(count):
        channel = grpc.insecure_channel(addr, options=[("grpc.enable_retries", 0)])
        calls.append(call(channel, oversized(), deadline))
        channel.close()
    return {"calls": calls}


if mode == "multiplexed":
    print(json.dumps(multiplexed()))
elif mode == "repeat":
    print(json.dumps(repeat(int(sys.argv[5]))))
else:
    raise SystemExit(f"unknown mode {mode}")
