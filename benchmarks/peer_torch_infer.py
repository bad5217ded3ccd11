"""The PyTorch side of ``benchmarks.peer_inference``: insightface's iresnet50 and MobileFaceNet
(``benchmarks/peer_torch.py``'s models) embedding 112x112 images, in eager mode and as
TorchScript.

Runs in the peer's own environment (``.venv-peer``), never in the project's ``.venv``;
``benchmarks.peer_inference`` starts it as a subprocess and talks to it over pipes, one JSON line
per message:

    python benchmarks/peer_torch_infer.py --backbone=iresnet50 --batches=1,64 --threads=2
    -> {"ready": true, "backbone_params": 43590336, "formats": ["eager", "torchscript"], ...}
    <- {"format": "torchscript", "batch": 1, "calls": 20}
    -> {"seconds": [0.051, 0.049, ...]}      one wall time per call, timed inside the peer
    <- (end of input)                          exit

The formats are what a PyTorch user deploys on a CPU: ``eager`` is the module in ``eval()`` under
``torch.inference_mode()``; ``torchscript`` is ``torch.jit.trace`` of it, then
``torch.jit.freeze`` (weights as constants, batch norm folded into the convolutions) and
``torch.jit.optimize_for_inference`` (oneDNN-specific rewrites). Both run channels-last, what
oneDNN's CPU convolutions prefer (``--contiguous`` for NCHW), on a fixed in-memory batch of
normalised pixels; denormals are flushed, as TensorFlow does by default. The weights are the
initialiser's with batch norm at its initial statistics, as on the project's side.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_torch  # noqa: E402  (the training peer's models, from this directory)

FORMATS = ("eager", "torchscript")


def _send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Embedders:
    """The backbone in each format, with one fixed input batch per batch size."""

    def __init__(self, backbone, batches, image_size=112, channels_last=True, seed=0):
        torch.manual_seed(seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = peer_torch.build_backbone(backbone).eval().to(
            memory_format=self.memory_format)
        generator = torch.Generator().manual_seed(seed)
        self.inputs = {batch: (torch.rand(batch, 3, image_size, image_size, generator=generator)
                               * 2 - 1).contiguous(memory_format=self.memory_format)
                       for batch in batches}
        with torch.no_grad():
            traced = torch.jit.trace(self.module, self.inputs[min(batches)])
            self.scripted = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        self.models = {"eager": self.module, "torchscript": self.scripted}

    def run(self, name, batch):
        with torch.inference_mode():
            return self.models[name](self.inputs[batch])

    def timed(self, name, batch, calls):
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            self.run(name, batch)
            seconds.append(time.perf_counter() - start)
        return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=peer_torch.BACKBONES, default="iresnet50")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--warmup", type=int, default=3, help="calls per format and batch")
    parser.add_argument("--contiguous", action="store_true",
                        help="NCHW-contiguous tensors instead of channels-last")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)
    batches = sorted({int(b) for b in args.batches.split(",")})
    embedders = Embedders(args.backbone, batches, args.image_size,
                          channels_last=not args.contiguous)
    # The same embedding from both formats, or the timing compares two different networks.
    with torch.inference_mode():
        eager = embedders.run("eager", batches[0])
        scripted = embedders.run("torchscript", batches[0])
    # Relative: a freshly initialised iresnet50 (insightface's N(0, 0.1) convolutions) embeds
    # with entries near 1e21, where an absolute difference says nothing.
    max_rel_diff = float((eager - scripted).abs().max() / eager.abs().max().clamp_min(1e-30))
    # TorchScript's profiling executor re-optimises on the first calls: warm every format and
    # batch before the first timed call.
    for name in FORMATS:
        for batch in batches:
            embedders.timed(name, batch, args.warmup)
    _send({"ready": True, "backbone_params": peer_torch.trainable_params(embedders.module),
           "formats": list(FORMATS), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "memory_format": "contiguous" if args.contiguous else "channels_last",
           "embedding_size": int(eager.shape[1]), "torchscript_max_rel_diff": max_rel_diff})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        _send({"seconds": embedders.timed(request["format"], int(request["batch"]),
                                          int(request["calls"]))})


if __name__ == "__main__":
    main()
