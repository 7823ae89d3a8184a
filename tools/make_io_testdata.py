#!/usr/bin/python3
"""Generates the small checkpoint / array files used by tests/test_io.c.

Run with Debian's python3 (torch 1.13, numpy 1.24):  /usr/bin/python3 tools/make_io_testdata.py
Writes tests/data/io/. Each .pth has its expected values next to it as .npy
files (float64 for floats, so the comparison in C is against the exact value
torch holds), so the C tests compare real numbers without torch.

Optional: with the `safetensors` package importable (e.g. a venv created with
--system-site-packages), also writes ref.safetensors with the reference writer.
"""
import io
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "io")
FIX = os.environ.get("KMSEG_SHARED", os.path.join(os.path.dirname(OUT), "..", "..", "..", "shared"))


def path(name):
    return os.path.join(OUT, name)


def save_ref(prefix, sd):
    """Expected values: <prefix>.<key>.npy holding the tensor contiguous, in its own dtype
    (float16/bfloat16 stored as the float32 value torch converts them to)."""
    for k, v in sd.items():
        t = v.detach().contiguous()
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        np.save(path(f"{prefix}.{k}.npy"), t.numpy())


def tiny_state_dict():
    torch.manual_seed(1)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 1.5)
        m[1].weight.normal_()
        m[1].bias.normal_()
        m[1].num_batches_tracked.fill_(7)
    return m.state_dict()


def legacy_v1_save(obj_sd, fname):
    """Writes a legacy pickle stream exactly as torch 0.1-0.3 did (torchvision's 2017
    resnet34-333f7ec4.pth): tensors via torch._utils._rebuild_tensor (v1), storage ids with
    a view_metadata slot, no num_batches_tracked. torch.load must read it back (checked)."""

    class Storage:
        def __init__(self, key, cls, t):
            self.key, self.cls, self.t = key, cls, t

    class Tensor:
        def __init__(self, st, t):
            self.st, self.t = st, t

        def __reduce__(self):
            return (torch._utils._rebuild_tensor,
                    (self.st, 0, tuple(self.t.shape), tuple(self.t.stride())))

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", obj.cls, obj.key, "cpu", obj.t.numel(), None)
            return None

    storages = OrderedDict()
    wrapped = OrderedDict()
    for i, (k, v) in enumerate(obj_sd.items()):
        key = str(140000000 + 16 * i)
        st = Storage(key, torch.FloatStorage, v.contiguous())
        storages[key] = st
        wrapped[k] = Tensor(st, v.contiguous())
    f = io.BytesIO()
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    P(f, protocol=2).dump(wrapped)
    pickle.dump(list(storages.keys()), f, protocol=2)
    for st in storages.values():
        f.write(struct.pack("<q", st.t.numel()))
        f.write(st.t.numpy().astype("<f4").tobytes())
    with open(fname, "wb") as fo:
        fo.write(f.getvalue())


def resnet_like():
    """Tiny torchvision-ResNet key layout (conv1, bn1, layer1..4, downsample, fc), no
    num_batches_tracked, as in resnet34-333f7ec4.pth."""
    torch.manual_seed(2)
    sd = OrderedDict()
    c = 4
    sd["conv1.weight"] = torch.randn(c, 3, 7, 7)

    def bn(p, ch):
        sd[p + ".weight"] = torch.rand(ch)
        sd[p + ".bias"] = torch.randn(ch)
        sd[p + ".running_mean"] = torch.randn(ch)
        sd[p + ".running_var"] = torch.rand(ch) + 0.5

    bn("bn1", c)
    cin = c
    for li, cout in enumerate([4, 8, 8, 8], start=1):
        for b in range(1):
            p = f"layer{li}.{b}"
            sd[p + ".conv1.weight"] = torch.randn(cout, cin, 3, 3)
            bn(p + ".bn1", cout)
            sd[p + ".conv2.weight"] = torch.randn(cout, cout, 3, 3)
            bn(p + ".bn2", cout)
            if cin != cout:
                sd[p + ".downsample.0.weight"] = torch.randn(cout, cin, 1, 1)
                bn(p + ".downsample.1", cout)
            cin = cout
    sd["fc.weight"] = torch.randn(10, cin)
    sd["fc.bias"] = torch.randn(10)
    return sd


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned-by-kmseg-test",))


def hostile():
    body = pickle.dumps(OrderedDict([("x", Evil())]), protocol=2)
    assert b"system" in body
    with zipfile.ZipFile(path("hostile_zip.pth"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("hostile/data.pkl", body)
        z.writestr("hostile/version", "3\n")
    f = io.BytesIO()
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    f.write(body)
    pickle.dump([], f, protocol=2)
    with open(path("hostile_legacy.pth"), "wb") as fo:
        fo.write(f.getvalue())
    # Protocol 4 STACK_GLOBAL reference to builtins.eval.
    with zipfile.ZipFile(path("hostile_eval.pth"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("h/data.pkl", pickle.dumps({"x": eval}, protocol=4))


def compressed_copy(src, dst):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))


def npy_files():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    np.save(path("npy_f4.npy"), a)
    np.save(path("npy_f8.npy"), a.astype(np.float64) / 3)
    np.save(path("npy_f2.npy"), a.astype(np.float16))
    np.save(path("npy_i8.npy"), np.arange(-3, 5, dtype=np.int64).reshape(2, 4))
    np.save(path("npy_i4.npy"), np.arange(-6, 6, dtype=np.int32))
    np.save(path("npy_u1.npy"), np.arange(250, 256, dtype=np.uint8).reshape(2, 3, 1))
    np.save(path("npy_b1.npy"), np.array([True, False, True]))
    np.save(path("npy_scalar.npy"), np.float32(2.5))
    np.save(path("npy_empty.npy"), np.zeros((0, 3), np.float32))
    for ver in [(2, 0), (3, 0)]:
        with open(path(f"npy_v{ver[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, a, version=ver)
    np.save(path("npy_fortran.npy"), np.asfortranarray(a))
    np.save(path("npy_bigendian.npy"), a.astype(">f4"))


def fixture_refs():
    """Reference values from the shared fixtures (so the C test checks numbers, not only
    shapes): full small tensors, and float64 sums of big ones."""
    out = {}
    for name, rel, keys in [
        ("unetpp", "fixtures/unetpp_small/unetpp_r18.pth",
         ["encoder.conv1.weight", "encoder.layer4.1.bn2.running_var",
          "decoder.blocks.x_0_3.conv1.0.weight", "segmentation_head.0.weight",
          "decoder.blocks.x_0_0.conv1.1.running_mean"]),
        ("sam", "fixtures/sam_tiny/sam_tiny.pth",
         ["image_encoder.pos_embed", "image_encoder.blocks.0.attn.rel_pos_h",
          "mask_decoder.iou_prediction_head.layers.2.bias",
          "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]),
    ]:
        p = os.path.join(FIX, rel)
        if not os.path.exists(p):
            print("skipping fixture refs (no", p, ")")
            continue
        sd = torch.load(p, map_location="cpu")
        sums = np.array([sd[k].double().sum().item() for k in keys], np.float64)
        np.save(path(f"fix_{name}_sums.npy"), sums)
        np.save(path(f"fix_{name}_first.npy"),
                np.stack([sd[k].flatten()[:4].double().numpy() for k in keys]))
        out[name] = (len(sd), sums)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))

    sd = tiny_state_dict()
    torch.save(sd, path("tiny_zip.pth"))
    torch.save(sd, path("tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    save_ref("tiny", sd)

    torch.manual_seed(3)
    mixed = OrderedDict()
    mixed["h"] = torch.randn(3, 5).half()
    mixed["b"] = torch.randn(4, 2).bfloat16()
    mixed["d"] = torch.randn(3, dtype=torch.float64)
    mixed["i32"] = torch.arange(-2, 2, dtype=torch.int32)
    mixed["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    mixed["flag"] = torch.tensor([True, False])
    mixed["scalar"] = torch.tensor(1.5)
    mixed["empty"] = torch.zeros(0, 3)
    torch.save(mixed, path("mixed_zip.pth"))
    torch.save(mixed, path("mixed_legacy.pth"), _use_new_zipfile_serialization=False)
    save_ref("mixed", mixed)

    torch.manual_seed(4)
    base = torch.randn(6, 5)
    big = torch.randn(2, 3, 4)
    nc = OrderedDict()
    nc["t"] = base.t()                   # stride (1, 5)
    nc["s"] = base[1:5:2, 1::2]          # offset 6, stride (10, 2)
    nc["p"] = big.permute(2, 0, 1)       # 3-d permutation
    nc["row"] = base[3]                  # contiguous view with offset 15, shares base's storage
    nc["e"] = torch.arange(3.0).expand(4, 3)  # stride (0, 1)
    torch.save(nc, path("noncontig_zip.pth"))
    torch.save(nc, path("noncontig_legacy.pth"), _use_new_zipfile_serialization=False)
    save_ref("noncontig", nc)

    torch.save({"state_dict": sd}, path("nested_state_dict.pth"))
    torch.save({"model": OrderedDict([("enc", OrderedDict([("w", sd["3.weight"])])),
                                      ("b", sd["3.bias"])]),
                "epoch": 3, "opt": {"lr": 0.1, "betas": (0.9, 0.999)}},
               path("nested_multi.pth"))

    rn = resnet_like()
    legacy_v1_save(rn, path("resnet_legacy_v1.pth"))
    back = torch.load(path("resnet_legacy_v1.pth"))
    assert list(back.keys()) == list(rn.keys())
    assert all(torch.equal(back[k], rn[k]) for k in rn)
    for k in ["conv1.weight", "layer2.0.downsample.0.weight", "fc.weight", "fc.bias"]:
        np.save(path(f"resnet.{k}.npy"), rn[k].numpy())

    hostile()
    compressed_copy(path("tiny_zip.pth"), path("tiny_deflate.pth"))
    npy_files()

    try:
        from safetensors.torch import save_file
        st = OrderedDict()
        st["a.weight"] = torch.randn(2, 3)
        st["a.half"] = torch.randn(5).half()
        st["a.bf"] = torch.randn(3).bfloat16()
        st["a.long"] = torch.arange(3)
        st["a.flag"] = torch.tensor([True, False, True])
        save_file(st, path("ref.safetensors"), metadata={"format": "pt", "note": "kmseg \"ref\""})
        save_ref("ref_st", st)
    except ImportError:
        print("safetensors not importable: ref.safetensors not written")

    refs = fixture_refs()
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes to {OUT}; fixtures: "
          + ", ".join(f"{k}: {v[0]} entries" for k, v in refs.items()))


if __name__ == "__main__":
    sys.exit(main())
