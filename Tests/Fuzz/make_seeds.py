#!/usr/bin/env python3
"""Writes the seed corpora under Tests/Fuzz/corpus (run once; the files are committed).
valid-* must be accepted by their target, bad-* rejected (FuzzCorpusReplayTests checks)."""
import io, json, os, struct, zlib, sys
import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
G = "/work/shared/golden/pipeline-a1"

def put(target, name, data):
    d = os.path.join(ROOT, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, name), "wb").write(data)

# --- npy
def npy(arr):
    b = io.BytesIO(); np.save(b, arr); return b.getvalue()
def npy_header(descr, shape, payload=b"", version=1):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + payload
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h)) + h.encode() + payload
put("npy", "valid-f32-2x3x4.npy", npy(np.arange(24, dtype=np.float32).reshape(2, 3, 4)))
put("npy", "valid-f64-2x4x3.npy", npy(np.linspace(-1, 1, 24).reshape(2, 4, 3)))
put("npy", "valid-empty.npy", npy(np.zeros((0, 5), dtype=np.float32)))
put("npy", "valid-scalar.npy", npy(np.float32(1.5)))
put("npy", "valid-v2-header.npy", npy_header("<f4", "(2,)", struct.pack("<2f", 1, 2), version=2))
frame = os.path.join(G, "inputs/poses/frame_0_densepose.npy")
if os.path.getsize(frame) < 64 << 10: put("npy", "valid-densepose-frame0.npy", open(frame, "rb").read())
# 2^61 elements of 8 bytes: 2^64 bytes wrap to 0 in unchecked arithmetic.
put("npy", "bad-shape-overflows-2p64.npy", npy_header("<f8", "(2305843009213693952,)"))
put("npy", "bad-shape-product-overflows.npy", npy_header("<f4", "(4294967296, 4294967296, 4)"))
put("npy", "bad-big-endian.npy", npy_header(">f4", "(1,)", b"\0\0\0\0"))
put("npy", "bad-truncated.npy", npy_header("<f4", "(4,)", b"\0" * 7))
put("npy", "bad-fortran.npy", npy_header("<f4", "(1,)", b"\0" * 4).replace(b"False", b"True "))
put("npy", "bad-huge-v2-header-length.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{}")
put("npy", "bad-too-many-dims.npy", npy_header("<f4", "(" + "1, " * 40 + ")", b"\0" * 4))

# --- png
def png_bytes(img, **kw):
    b = io.BytesIO(); img.save(b, format="PNG", **kw); return b.getvalue()
rgb = Image.new("RGB", (8, 6)); rgb.putdata([(x * 30, y * 40, (x + y) * 10) for y in range(6) for x in range(8)])
put("png", "valid-rgb-8x6.png", png_bytes(rgb))
put("png", "valid-rgba-4x4.png", png_bytes(Image.new("RGBA", (4, 4), (10, 20, 30, 128))))
put("png", "valid-grey-5x3.png", png_bytes(Image.new("L", (5, 3), 77)))
put("png", "valid-palette-6x6.png", png_bytes(rgb.resize((6, 6)).convert("P")))
put("png", "valid-16bit-grey-3x3.png", png_bytes(Image.new("I;16", (3, 3), 40000)))
put("png", "valid-interlaced-9x7.png", png_bytes(Image.new("RGB", (9, 7), (1, 2, 3)), optimize=False) )
def chunk(t, body): return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xffffffff)
sig = b"\x89PNG\r\n\x1a\n"
huge = sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 0x7FFFFFFF, 0x7FFFFFFF, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
put("png", "bad-ihdr-huge.png", huge)  # 69 bytes declaring 2^31-1 x 2^31-1
wide = sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 1000000, 1, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
put("png", "bad-ihdr-million-wide.png", wide)
put("png", "bad-zero-size.png", sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
put("png", "bad-truncated-idat.png", png_bytes(rgb)[:60])
put("png", "bad-not-png.png", b"GIF89a....")

# --- safetensors
def st(header, data=b"", raw_len=None):
    h = json.dumps(header).encode()
    return struct.pack("<Q", raw_len if raw_len is not None else len(h)) + h + data
put("safetensors", "valid-two-tensors.safetensors",
    st({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]},
        "__metadata__": {"format": "pt"}}, bytes(range(22))))
put("safetensors", "valid-empty-and-bf16.safetensors",
    st({"e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
        "w": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [0, 4]}}, b"\1\2\3\4"))
put("safetensors", "valid-empty-object.safetensors", st({}))
adapter = os.path.join(G, "model/adapter/adapter.safetensors")
if os.path.getsize(adapter) < 64 << 10: put("safetensors", "valid-golden-adapter.safetensors", open(adapter, "rb").read())
put("safetensors", "bad-huge-header-length.safetensors", st({}, raw_len=(1 << 63) + 5))
put("safetensors", "bad-offsets-out-of-file.safetensors",
    st({"a": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}, b"\0" * 8))
put("safetensors", "bad-overlap.safetensors",
    st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
put("safetensors", "bad-shape-overflow.safetensors",
    st({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62, 0], "data_offsets": [0, 0]}}))
put("safetensors", "bad-negative-offset.safetensors",
    st({"a": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, b"\0"))

# --- config (first byte picks the reader: U V C A S D)
def cfg(kind, obj): return kind + (obj if isinstance(obj, str) else json.dumps(obj, indent=1))
for kind, path in [("U", "model/unet/config.json"), ("V", "model/vae/config.json"),
                   ("C", "model/image_encoder/config.json"), ("A", "model/adapter/config.json"),
                   ("S", "model/scheduler/scheduler_config.json")]:
    full = os.path.join(G, path)
    if os.path.exists(full): put("config", "valid-golden-%s.json" % path.split("/")[1], cfg(kind, open(full).read()))
sd15 = {"_class_name": "UNet2DConditionModel", "in_channels": 14, "out_channels": 4, "sample_size": 64,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
put("config", "valid-unet-dreampose.json", cfg("U", sd15))
put("config", "bad-layers-per-block-int32max.json", cfg("U", dict(sd15, layers_per_block=2147483647)))
put("config", "bad-unet-channels-huge.json", cfg("U", dict(sd15, block_out_channels=[1 << 40] * 4)))
put("config", "bad-unet-norm-eps-nan.json", cfg("U", json.dumps(dict(sd15, norm_eps=1e39))))
put("config", "bad-vae-layers-huge.json", cfg("V", {"block_out_channels": [128, 256], "layers_per_block": 1 << 31,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}))
put("config", "bad-clip-layers-huge.json", cfg("C", {"hidden_size": 768, "num_hidden_layers": 1 << 30}))
put("config", "bad-adapter-tokens-huge.json", cfg("A", {"clip_tokens": 1 << 40, "vae_tokens": 4, "vae_features": 1280, "hidden": 768}))
put("config", "valid-scheduler-sd15.json", cfg("S", {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000,
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "skip_prk_steps": True,
    "set_alpha_to_one": False, "steps_offset": 1}))
put("config", "valid-scheduler-dpm.json", cfg("S", '{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 2, "lambda_min_clipped": -Infinity, "algorithm_type": "dpmsolver++"}'))
put("config", "bad-scheduler-train-steps-huge.json", cfg("S", {"num_train_timesteps": 1 << 62}))
put("config", "bad-scheduler-beta-nan.json", cfg("S", '{"beta_start": NaN}'))
put("config", "bad-scheduler-offset.json", cfg("S", {"num_train_timesteps": 10, "steps_offset": 1 << 40}))
dp = {"format": "dreampose-model/1", "name": "seed", "height": 640, "width": 512, "vae_scaling_factor": 0.18215,
      "pose_window": 5, "defaults": {"steps": 100, "sampler": "pndm", "image_guidance": 8.0, "pose_guidance": 3.0}}
put("config", "valid-dreampose.json", cfg("D", dp))
put("config", "bad-dreampose-steps-1e300.json", cfg("D", json.dumps(dp).replace('"steps": 100', '"steps": 1e300')))
put("config", "bad-dreampose-pose-window-huge.json", cfg("D", dict(dp, pose_window=4294967297)))
put("config", "bad-dreampose-guidance-huge.json", cfg("D", json.dumps(dp).replace("8.0", "1e39")))
put("config", "bad-dreampose-frame-huge.json", cfg("D", dict(dp, height=1 << 20, width=1 << 20)))

# --- manifest ('{' = JSON sidecar, else protobuf FarmModelManifest)
import hashlib
def mjson(files, model_id=None):
    files = sorted(files, key=lambda f: f["path"].encode())
    ident = hashlib.sha256(b"".join(f["path"].encode() + b"\0" + f["sha256"].encode() + b"\n" for f in files)).hexdigest()
    return json.dumps({"model_id": model_id or ident, "files": files})
h = hashlib.sha256(b"x").hexdigest()
put("manifest", "valid-two-files.json", mjson([{"path": "dreampose.json", "size": 300, "sha256": h},
                                               {"path": "unet/config.json", "size": 400, "sha256": h}]))
put("manifest", "bad-2p62-byte-file.json", mjson([{"path": "unet/w.safetensors", "size": 1 << 62, "sha256": h}]))
put("manifest", "bad-sizes-overflow-sum.json", mjson([{"path": "a", "size": (1 << 64) - 1, "sha256": h},
                                                      {"path": "b", "size": (1 << 64) - 1, "sha256": h}]))
put("manifest", "bad-dotdot-path.json", mjson([{"path": "../etc/passwd", "size": 1, "sha256": h}]))
put("manifest", "bad-wrong-id.json", mjson([{"path": "a", "size": 1, "sha256": h}], model_id="0" * 64))
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, wt, payload): return varint(num << 3 | wt) + payload
def ld(num, b): return field(num, 2, varint(len(b)) + b)
# FarmModelManifest: model_id = 1, files = 2 (FarmModelFile: path 1, size 2, sha256 3) -- see Protos/
def wire_file(path, size, sha): return ld(1, path.encode()) + field(2, 0, varint(size)) + ld(3, sha.encode())
ident = hashlib.sha256(b"a\0" + h.encode() + b"\n").hexdigest()
put("manifest", "valid-wire-one-file.bin", ld(1, ident.encode()) + ld(2, wire_file("a", 5, h)))
put("manifest", "bad-wire-2p62.bin", ld(1, ident.encode()) + ld(2, wire_file("a", 1 << 62, h)))

# --- envelope (dpfarm.v1.Envelope, Protos/dpfarm/v1/farm.proto): version 1 = field 1
def env(body_field, body, request_id=0, version=1):
    return field(1, 0, varint(version)) + (field(2, 0, varint(request_id)) if request_id else b"") + ld(body_field, body)
hello = ld(1, b"worker-1") + field(2, 0, varint(2)) + ld(3, ident.encode()) + field(4, 0, varint(8)) \
    + field(6, 0, varint(17)) + field(7, 0, varint(64 << 20))
put("envelope", "valid-hello.bin", env(10, hello))
put("envelope", "valid-heartbeat.bin", env(30, field(1, 0, varint(3)) + field(2, 0, varint(1700000000000)) + field(4, 0, varint(1))))
put("envelope", "valid-model-manifest.bin", env(24, ld(1, ident.encode()) + ld(2, wire_file("a", 5, h)), request_id=9))
put("envelope", "valid-goodbye.bin", env(16, ld(1, b"SIGTERM")))
put("envelope", "bad-version-2.bin", env(10, hello, version=2))
put("envelope", "bad-no-body.bin", field(1, 0, varint(1)))
put("envelope", "bad-truncated.bin", env(10, hello)[:-3])
put("envelope", "bad-length-huge.bin", field(1, 0, varint(1)) + field(10, 2, varint(1 << 62)))
# Delivery receipts (Envelope.receipt = 3, Envelope.ack = 4: Receipt{sequence 1, bytes 2, token 3 fixed64,
# cap_bytes 4, cap_messages 5}) and the Acknowledge body (32): hostile values included.
def receipt(seq, nbytes, token, cap_bytes=0, cap_messages=0):
    return field(1, 0, varint(seq)) + field(2, 0, varint(nbytes)) + field(3, 1, struct.pack("<Q", token)) \
        + (field(4, 0, varint(cap_bytes)) if cap_bytes else b"") + (field(5, 0, varint(cap_messages)) if cap_messages else b"")
put("envelope", "valid-acknowledge-hostile-ack.bin",
    field(1, 0, varint(1)) + ld(4, receipt((1 << 64) - 1, (1 << 64) - 1, (1 << 64) - 1)) + ld(32, b""))
put("envelope", "valid-heartbeat-receipt.bin",
    env(30, field(1, 0, varint(3))) + ld(3, receipt(7, 1234, 0x0123456789abcdef, 64 << 20, 4096)))

# --- coordinator / worker targets: up to 8 envelopes joined by "\n--\n"
SEP = b"\n--\n"
os.makedirs(os.path.join(ROOT, "coordinator"), exist_ok=True)
put("coordinator", "hello.bin", env(10, hello))
put("coordinator", "heartbeat.bin", env(30, field(1, 0, varint(3)) + field(2, 0, varint(1700000000000)) + field(4, 0, varint(1))))
put("coordinator", "truncated.bin", env(10, hello)[:-3])
put("coordinator", "hello-heartbeat-manifest-goodbye.bin", SEP.join([
    env(10, hello), env(30, field(1, 0, varint(3))), env(24, ld(1, ident.encode()) + ld(2, wire_file("a", 5, h))),
    env(16, ld(1, b"SIGTERM"))]))
put("coordinator", "hello-credit-huge-running-ids.bin", SEP.join([
    env(10, ld(1, b"w2") + field(2, 0, varint(1)) + b"".join(field(6, 0, varint(i)) for i in range(1, 200))),
    env(11, field(1, 0, varint(0xFFFFFFFF)))]))
put("coordinator", "acks-hostile.bin", SEP.join([
    field(1, 0, varint(1)) + ld(4, receipt(0, 0, 0)) + ld(32, b""),
    field(1, 0, varint(1)) + ld(4, receipt((1 << 64) - 1, 1, 1)) + ld(43, b""),
    field(1, 0, varint(1)) + ld(4, receipt(1, (1 << 64) - 1, 7)) + ld(32, b"")]))
welcome = ld(1, b"c-fuzz") + field(2, 0, varint(100)) + field(3, 0, varint(5)) + field(4, 0, varint(64 << 20)) \
    + field(5, 0, varint(1 << 20))
put("worker", "welcome.bin", env(20, welcome))
put("worker", "welcome-extreme.bin", env(20, ld(1, b"c") + field(2, 0, varint(0)) + field(3, 0, varint(0xFFFFFFFF))
    + field(4, 0, varint((1 << 64) - 1)) + field(5, 0, varint(0)) + b"".join(field(6, 0, varint(i)) for i in range(50))))
put("worker", "welcome-then-heartbeat-cancel-error.bin", SEP.join([
    env(20, welcome), env(30, field(1, 0, varint(1))), env(23, field(1, 0, varint(7))),
    env(31, field(1, 0, varint(3)) + ld(2, b"not registered"))]))
put("worker", "welcome-then-manifest-2p62.bin", SEP.join([
    env(20, welcome), env(24, ld(1, ident.encode()) + ld(2, wire_file("a", 1 << 62, h)), request_id=1)]))
put("worker", "garbage.bin", b"\x08\x01\xa2\x01\xff\xff")
