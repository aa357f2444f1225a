"""Drives a running infergate's system shared-memory extension with Triton's own clients and their shared-memory
helpers (tritonclient.utils.shared_memory), over HTTP and gRPC: every bundled model's golden inputs written into a
region, its outputs written by the server into another one (and, for a model with two outputs, one in a region and
one in the response), each bad handle answered with its error while another thread keeps inferring, and a region
unregistered and registered again while requests use it.

Run by tests/shared_memory.rs, which starts the server with --shared-memory and the bundled models (and its gRPC
API on a Unix socket too, where the goldens run once more: the sidecar's way):
    python shared_memory_clients.py --http HOST:PORT --grpc HOST:PORT --grpc-socket PATH --golden DIR
Every check raises on failure; the exit status is the verdict.
"""

import argparse
import os
import threading

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from triton_clients import check_outputs, expect_error, golden_input, load_goldens

NUMPY = {"FP32": np.float32, "INT64": np.int64}
OUTPUT_ROOM = 4096


def key(tag):
    return f"/infergate-interop-{os.getpid()}-{tag}"


def output_datatype(output):
    """The datatype of a result's output: a dict from the HTTP client, a message from the gRPC client."""
    return output["datatype"] if isinstance(output, dict) else output.datatype


def output_shape(output):
    return list(output["shape"] if isinstance(output, dict) else output.shape)


def output_parameters(output):
    if isinstance(output, dict):
        return output.get("parameters", {})
    return {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in output.parameters.items()}


class Protocol:
    def __init__(self, name, module, client):
        self.name, self.module, self.client = name, module, client


def golden_roundtrip(protocol, golden, tag):
    """The golden request with its input in a region and every output written into another; when the model has
    two outputs, the second comes back in the response instead, beside the first in shared memory."""
    client, module = protocol.client, protocol.module
    model, version = golden["model"], golden["version"]
    name, datatype, data = golden_input(golden)
    in_key, out_key = key(f"{tag}-in"), key(f"{tag}-out")
    in_handle = shm.create_shared_memory_region(f"{tag}-in", in_key, data.nbytes)
    out_handle = shm.create_shared_memory_region(f"{tag}-out", out_key, OUTPUT_ROOM)
    try:
        shm.set_shared_memory_region(in_handle, [data])
        client.register_system_shared_memory(f"{tag}-in", in_key, data.nbytes)
        client.register_system_shared_memory(f"{tag}-out", out_key, OUTPUT_ROOM)
        infer_input = module.InferInput(name, list(data.shape), datatype)
        infer_input.set_shared_memory(f"{tag}-in", data.nbytes)
        names = list(golden["outputs"])
        in_region = names if len(names) == 1 else names[:1]
        outputs = []
        for ix, output in enumerate(names):
            requested = module.InferRequestedOutput(output)
            if output in in_region:
                requested.set_shared_memory(f"{tag}-out", OUTPUT_ROOM // 2, offset=ix * OUTPUT_ROOM // 2)
            outputs.append(requested)
        result = client.infer(model, [infer_input], model_version=version, outputs=outputs)

        def read(output):
            described = result.get_output(output)
            if output not in in_region:
                return result.as_numpy(output)
            # As Triton answers it: the output's datatype and shape, no data and no parameters.
            assert not output_parameters(described), described
            offset = names.index(output) * OUTPUT_ROOM // 2
            dtype = NUMPY[output_datatype(described)]
            return shm.get_contents_as_numpy(out_handle, dtype, output_shape(described), offset=offset)

        check_outputs(f"{protocol.name} shared memory {model}/{version}", read, golden)
        status = client.get_system_shared_memory_status(f"{tag}-in")
        listed = status[0] if isinstance(status, list) else status.regions[f"{tag}-in"]
        listed = listed if isinstance(listed, dict) else {"key": listed.key, "byte_size": listed.byte_size}
        assert listed["key"] == in_key and int(listed["byte_size"]) == data.nbytes, listed
    finally:
        client.unregister_system_shared_memory(f"{tag}-in")
        client.unregister_system_shared_memory(f"{tag}-out")
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


class Steady(threading.Thread):
    """Infers iris with in-band data until stopped; every answer must be right."""

    def __init__(self, http, golden):
        super().__init__(daemon=True)
        self.client = httpclient.InferenceServerClient(http)
        self.golden, self.done, self.answers, self.failure = golden, threading.Event(), 0, None

    def run(self):
        name, datatype, data = golden_input(self.golden)
        try:
            while not self.done.is_set():
                infer_input = httpclient.InferInput(name, list(data.shape), datatype)
                infer_input.set_data_from_numpy(data, binary_data=True)
                result = self.client.infer(self.golden["model"], [infer_input], model_version=self.golden["version"])
                check_outputs("steady REST", result.as_numpy, self.golden)
                self.answers += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.failure = e

    def stop(self):
        self.done.set()
        self.join(timeout=30)
        assert self.failure is None, f"an in-band request failed beside the bad handles: {self.failure!r}"
        assert self.answers > 0, "the steady client never got an answer"


def bad_handles(protocol, golden):
    """Every bad handle gets its own error; the server answers the next request as if nothing happened."""
    client, module, where = protocol.client, protocol.module, protocol.name
    invalid = "400" if protocol.name == "HTTP" else "INVALID_ARGUMENT"
    model, version = golden["model"], golden["version"]
    name, datatype, data = golden_input(golden)
    region_key = key(f"bad-{where}")
    handle = shm.create_shared_memory_region(f"bad-{where}", region_key, data.nbytes)
    shm.set_shared_memory_region(handle, [data])

    def infer(region, byte_size, offset=0, output=None):
        infer_input = module.InferInput(name, list(data.shape), datatype)
        infer_input.set_shared_memory(region, byte_size, offset=offset)
        outputs = None
        if output is not None:
            requested = module.InferRequestedOutput(list(golden["outputs"])[0])
            requested.set_shared_memory(*output)
            outputs = [requested]
        return client.infer(model, [infer_input], model_version=version, outputs=outputs)

    link_key = key(f"link-{where}")
    os.symlink("/etc/passwd", f"/dev/shm{link_key}")
    try:
        for bad_key, fragment in [("/../etc/passwd", "after the first character"), ("/etc/passwd", "after the first"),
                                  ("/", "names no object"), (key("missing"), "cannot open"), (link_key, "cannot open")]:
            expect_error(f"{where} key {bad_key}", lambda: client.register_system_shared_memory("evil", bad_key, 16),
                         invalid, fragment)
        expect_error(f"{where} region past the object",
                     lambda: client.register_system_shared_memory("big", region_key, data.nbytes + 1), invalid,
                     "past the end of shared memory key")
        client.register_system_shared_memory("bad", region_key, data.nbytes)
        expect_error(f"{where} registered twice", lambda: client.register_system_shared_memory("bad", region_key, 4),
                     invalid, "already registered")
        expect_error(f"{where} unknown region", lambda: infer("nope", data.nbytes), invalid,
                     "no system shared memory region named 'nope'")
        expect_error(f"{where} window past the region", lambda: infer("bad", data.nbytes, offset=4), invalid,
                     "past the end of region 'bad'")
        expect_error(f"{where} size not the shape's", lambda: infer("bad", data.nbytes - 4), invalid,
                     f"needs {data.nbytes} bytes")
        expect_error(f"{where} output window too small", lambda: infer("bad", data.nbytes, output=("bad", 1)),
                     invalid, "shared_memory_byte_size is 1")
        expect_error(f"{where} status of an unknown region", lambda: client.get_system_shared_memory_status("nope"),
                     "no system shared memory region named 'nope'")
        # The owner shrinks its object under a registered region: a short read, answered as its error.
        os.truncate(f"/dev/shm{region_key}", 4)
        expect_error(f"{where} truncated object", lambda: infer("bad", data.nbytes), invalid,
                     "shorter than when it was registered")
        # Another request, valid, still gets its answer.
        golden_roundtrip(protocol, golden, f"after-{where}")
    finally:
        os.unlink(f"/dev/shm{link_key}")
        client.unregister_system_shared_memory("bad")
        shm.destroy_shared_memory_region(handle)


def unregister_while_in_use(protocol, golden, rounds=200):
    """One thread infers from a region while another unregisters and registers it again: each answer is either
    right or 'no region named', never wrong data, and the server keeps serving."""
    client, module = protocol.client, protocol.module
    model, version = golden["model"], golden["version"]
    name, datatype, data = golden_input(golden)
    region_key = key(f"churn-{protocol.name}")
    handle = shm.create_shared_memory_region(f"churn-{protocol.name}", region_key, data.nbytes)
    shm.set_shared_memory_region(handle, [data])
    client.register_system_shared_memory("churn", region_key, data.nbytes)
    done, counts = threading.Event(), {"answered": 0, "unknown": 0}

    def churn():
        other = (httpclient.InferenceServerClient(protocol.client_url) if protocol.name == "HTTP"
                 else grpcclient.InferenceServerClient(protocol.client_url))
        while not done.is_set():
            other.unregister_system_shared_memory("churn")
            other.register_system_shared_memory("churn", region_key, data.nbytes)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        for _ in range(rounds):
            infer_input = module.InferInput(name, list(data.shape), datatype)
            infer_input.set_shared_memory("churn", data.nbytes)
            try:
                result = client.infer(model, [infer_input], model_version=version)
            except Exception as e:  # noqa: BLE001 - checked below
                assert "no system shared memory region named 'churn'" in str(e), e
                counts["unknown"] += 1
                continue
            check_outputs(f"{protocol.name} churned region", result.as_numpy, golden)
            counts["answered"] += 1
    finally:
        done.set()
        churner.join(timeout=30)
        client.unregister_system_shared_memory("churn")
        shm.destroy_shared_memory_region(handle)
    assert counts["answered"] > 0, counts
    print(f"{protocol.name} region churn: {counts}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--grpc-socket", required=True)
    parser.add_argument("--golden", required=True)
    args = parser.parse_args()
    goldens = load_goldens(args.golden)
    over_socket = Protocol("gRPC socket", grpcclient, grpcclient.InferenceServerClient(f"unix://{args.grpc_socket}"))
    for ix, golden in enumerate(goldens):
        golden_roundtrip(over_socket, golden, f"socket-{ix}")
    print("gRPC over the Unix socket: every golden through shared memory")
    protocols = [Protocol("HTTP", httpclient, httpclient.InferenceServerClient(args.http)),
                 Protocol("gRPC", grpcclient, grpcclient.InferenceServerClient(args.grpc))]
    protocols[0].client_url, protocols[1].client_url = args.http, args.grpc
    for protocol in protocols:
        metadata = protocol.client.get_server_metadata()
        extensions = metadata["extensions"] if isinstance(metadata, dict) else list(metadata.extensions)
        assert "system_shared_memory" in extensions, extensions
        for ix, golden in enumerate(goldens):
            golden_roundtrip(protocol, golden, f"{protocol.name}-{ix}")
        print(f"{protocol.name}: every golden through shared memory")
        steady = Steady(args.http, goldens[0])
        steady.start()
        try:
            bad_handles(protocol, goldens[0])
        finally:
            steady.stop()
        print(f"{protocol.name}: bad handles refused beside {steady.answers} steady answers")
        unregister_while_in_use(protocol, goldens[0])
        status = protocol.client.get_system_shared_memory_status()
        regions = status if isinstance(status, list) else list(status.regions)
        assert not regions, f"regions left registered: {regions}"
    print("shared memory: every check passed")


if __name__ == "__main__":
    main()
