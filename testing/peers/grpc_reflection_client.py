#!/usr/bin/python3
"""A gRPC client nobody here wrote the runtime of: Debian's python3-grpcio (the C-core stack) and
python3-protobuf. It learns the schema through server reflection alone, builds a strict
descriptor pool from what the server sent (every import must be served, under its own name, or
DescriptorPool.Add fails), then calls one method with a JSON request and prints the JSON answer.

    grpc_reflection_client.py <host:port> <reflection proto dir> list
    grpc_reflection_client.py <host:port> <reflection proto dir> call <pkg.Service/Method> <json> [bearer key]
    grpc_reflection_client.py <host:port> <reflection proto dir> describe <symbol>

The reflection protocol's own messages are compiled from the vendored reflection.proto with
grpc_tools (python3-grpc-tools) into a temporary directory. Output: one JSON object on stdout.
"""
import importlib.util
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def reflection_module(proto_dir):
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="shieldx-reflection-")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", "grpc/reflection/v1/reflection.proto"])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    # Loaded from its file, not as the package `grpc.reflection`: that name is grpcio's own.
    path = os.path.join(out, "grpc", "reflection", "v1", "reflection_pb2.py")
    spec = importlib.util.spec_from_file_location("shieldx_reflection_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Reflection:
    def __init__(self, channel, pb2, metadata):
        self.pb2 = pb2
        self.metadata = metadata
        self.call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb2.ServerReflectionResponse.FromString,
        )
        self.files = {}

    def ask(self, **request):
        responses = list(self.call(iter([self.pb2.ServerReflectionRequest(**request)]), metadata=self.metadata, timeout=10))
        if len(responses) != 1:
            raise SystemExit(f"expected one reflection answer, got {len(responses)}")
        answer = responses[0]
        if answer.HasField("error_response"):
            raise SystemExit(f"reflection error {answer.error_response.error_code}: {answer.error_response.error_message}")
        return answer

    def services(self):
        return [s.name for s in self.ask(list_services="").list_services_response.service]

    def load_symbol(self, symbol):
        answer = self.ask(file_containing_symbol=symbol)
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
            self.files[fdp.name] = fdp

    def pool(self):
        """Adds files in dependency order; a dependency that was never served fails here."""
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(name, chain=()):
            if name in added:
                return
            if name not in self.files:
                raise SystemExit(f"server never sent {name} (needed by {' -> '.join(chain) or 'the request'})")
            for dep in self.files[name].dependency:
                add(dep, chain + (name,))
            pool.Add(self.files[name])
            added.add(name)

        for name in list(self.files):
            add(name)
        return pool


def main():
    target, proto_dir, command = sys.argv[1], sys.argv[2], sys.argv[3]
    args = sys.argv[4:]
    channel = grpc.insecure_channel(target)
    pb2 = reflection_module(proto_dir)
    key = args[2] if command == "call" and len(args) > 2 else None
    metadata = [("authorization", f"Bearer {key}")] if key else []
    reflection = Reflection(channel, pb2, metadata)
    if command == "list":
        print(json.dumps({"services": reflection.services()}))
        return
    if command == "describe":
        reflection.load_symbol(args[0])
        pool = reflection.pool()
        service = pool.FindServiceByName(args[0])
        print(json.dumps({"service": service.full_name, "methods": [m.name for m in service.methods], "files": sorted(reflection.files)}))
        return
    if command == "call":
        path, body = args[0], args[1]
        service_name, method_name = path.split("/")
        reflection.load_symbol(service_name)
        pool = reflection.pool()
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.MessageFactory(pool).GetPrototype(method.input_type)
        response_class = message_factory.MessageFactory(pool).GetPrototype(method.output_type)
        request = json_format.Parse(body, request_class())
        call = channel.unary_unary(f"/{path}", request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)
        try:
            response = call(request, metadata=metadata, timeout=10)
            print(json.dumps({"ok": True, "response": json.loads(json_format.MessageToJson(response))}))
        except grpc.RpcError as error:
            print(json.dumps({"ok": False, "code": error.code().name, "details": error.details()}))
        return
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
