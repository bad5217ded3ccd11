"""The PyTorch peer of ``benchmarks.peer``: insightface's iresnet50 and MobileFaceNet, trained
with the same batch, input size, head and optimizer as this project's training step.

Runs in its own environment (``.venv-peer``, torch from ``requirements-peer.txt``), never in the
project's ``.venv``; ``benchmarks.peer`` starts it as a subprocess and talks to it over pipes,
one JSON line per message:

    python benchmarks/peer_torch.py --backbone=iresnet50 --precision=fp32 --batch=64
    -> {"ready": true, "backbone_params": 43590336, ...}   after building and warming up
    <- 3                                                  run 3 training steps
    -> {"seconds_per_step": 12.3, "loss": 41.2}
    <- (end of input)                                     exit

``--count`` prints the parameter counts and exits without training. ``--device=cuda`` trains on
the GPU (``scripts/gpu_check.sh``), where ``--precision=fp16`` is ``torch.autocast`` to float16
with a ``GradScaler`` (dynamic loss scaling), as this project's ``precision=fp16`` on GPU.

The models follow insightface ``recognition/arcface_torch/backbones/iresnet.py`` and
``mobilefacenet.py`` (``get_mbf``: blocks (1, 4, 6, 2), scale 2) layer for layer, written here
from that published architecture: same layers, shapes and trainable parameters (the iresnet
neck's final BatchNorm1d keeps its scale frozen at 1, as there). The head is the class-level
Circle loss (m 0.25, gamma 256) over L2-normalised proxies, as ``model.heads.CircleHead``; the
optimizer momentum SGD (0.9) with weight decay 5e-4 on convolution, linear and proxy weights, as
``model.optimization``. bf16 is ``torch.autocast`` over the backbone, the head in float32, which
is where the project's ``precision=bf16`` puts its casts. Inputs are one fixed in-memory batch,
channels-last by default (what oneDNN's CPU convolutions prefer).
"""

import argparse
import json
import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional

BACKBONES = ("iresnet50", "mobilefacenet")
PRECISIONS = ("fp32", "bf16", "fp16")
IRESNET50_DEPTHS = (3, 4, 14, 3)
WIDTHS = (64, 128, 256, 512)


def _conv(cin, cout, kernel, stride=1, groups=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups,
                     bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5), _conv(cin, cout, 3), nn.BatchNorm2d(cout, eps=1e-5),
            nn.PReLU(cout), _conv(cout, cout, 3, stride), nn.BatchNorm2d(cout, eps=1e-5))
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride),
                                          nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.body(x) + identity


class IResNet(nn.Module):
    """Stem conv3x3(64) -> BN -> PReLU; four stride-2 stages of IBasicBlocks; BN -> flatten
    (512x7x7) -> dropout -> FC -> BatchNorm1d with its scale frozen at 1."""

    def __init__(self, depths=IRESNET50_DEPTHS, embedding_size=512, dropout=0.0):
        super().__init__()
        stem = [_conv(3, 64, 3), nn.BatchNorm2d(64, eps=1e-5), nn.PReLU(64)]
        blocks = []
        cin = 64
        for width, depth in zip(WIDTHS, depths):
            for index in range(depth):
                blocks.append(IBasicBlock(cin, width, 2 if index == 0 else 1))
                cin = width
        self.body = nn.Sequential(*stem, *blocks, nn.BatchNorm2d(512, eps=1e-5))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512 * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)

    def forward(self, x):
        x = torch.flatten(self.body(x), 1)
        return self.features(self.fc(self.dropout(x)))


def _conv_block(cin, cout, kernel, stride=1, groups=1, linear=False):
    """conv -> BN (-> PReLU unless ``linear``): insightface's ConvBlock / LinearBlock."""
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel // 2 if kernel == 3
                                                                   else 0),
                        groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if not linear:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class DepthWiseUnit(nn.Module):
    """1x1 ConvBlock to ``inner`` -> 3x3 depthwise ConvBlock (stride) -> 1x1 LinearBlock,
    residual when asked (stride 1, same width)."""

    def __init__(self, cin, cout, inner, stride, residual):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(_conv_block(cin, inner, 1),
                                  _conv_block(inner, inner, 3, stride, groups=inner),
                                  _conv_block(inner, cout, 1, linear=True))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileFaceNet(nn.Module):
    """get_mbf: blocks (1, 4, 6, 2), scale 2 (widths 128 and 256), GDC neck."""

    def __init__(self, embedding_size=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        base, wide = 64 * scale, 128 * scale
        units = [_conv_block(3, base, 3, 2), _conv_block(base, base, 3, 1, groups=64),
                 DepthWiseUnit(base, base, 128, 2, False)]
        units += [DepthWiseUnit(base, base, 128, 1, True) for _ in range(blocks[1])]
        units.append(DepthWiseUnit(base, wide, 256, 2, False))
        units += [DepthWiseUnit(wide, wide, 256, 1, True) for _ in range(blocks[2])]
        units.append(DepthWiseUnit(wide, wide, 512, 2, False))
        units += [DepthWiseUnit(wide, wide, 256, 1, True) for _ in range(blocks[3])]
        units.append(_conv_block(wide, 512, 1))
        units.append(_conv_block(512, 512, 7, groups=512, linear=True))  # GDC
        self.body = nn.Sequential(*units)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.features(self.linear(torch.flatten(self.body(x), 1)))


def build_backbone(name, embedding_size=512):
    if name == "iresnet50":
        return IResNet(IRESNET50_DEPTHS, embedding_size)
    if name == "mobilefacenet":
        return MobileFaceNet(embedding_size)
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")


class CircleHead(nn.Module):
    """Class-level Circle loss over L2-normalised proxies [D, C] (model.circle_loss)."""

    def __init__(self, embedding_size, num_classes, margin=0.25, gamma=256.0):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(embedding_size, num_classes) * 0.01)
        self.margin, self.gamma = margin, gamma

    def forward(self, embeddings, labels):
        cos = functional.normalize(embeddings, dim=1) @ functional.normalize(self.proxies, dim=0)
        m = self.margin
        logits = self.gamma * torch.relu(cos + m).detach() * (cos - m)
        rows = torch.arange(cos.shape[0], device=cos.device)
        s_p = cos[rows, labels]
        positive = self.gamma * torch.relu(1.0 + m - s_p).detach() * (s_p - (1.0 - m))
        logits = logits.index_put((rows, labels), positive)
        return functional.cross_entropy(logits, labels)


def trainable_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _decayed(name, parameter):
    """Convolution kernels, linear weights and proxies (model.optimization.is_decayed)."""
    return parameter.dim() > 1


class Trainer:
    def __init__(self, backbone, precision, batch, num_classes, image_size=112,
                 channels_last=True, seed=0, device="cpu"):
        torch.manual_seed(seed)
        self.precision = precision
        self.device = torch.device(device)
        self.backbone = build_backbone(backbone)
        self.head = CircleHead(512, num_classes).to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone = self.backbone.to(self.device, memory_format=self.memory_format)
        params = [(n, p) for module in (self.backbone, self.head)
                  for n, p in module.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            [{"params": [p for n, p in params if _decayed(n, p)], "weight_decay": 5e-4},
             {"params": [p for n, p in params if not _decayed(n, p)], "weight_decay": 0.0}],
            lr=0.01, momentum=0.9)
        generator = torch.Generator().manual_seed(seed)
        self.images = (torch.rand(batch, 3, image_size, image_size, generator=generator) * 2 - 1
                       ).to(self.device).contiguous(memory_format=self.memory_format)
        self.labels = torch.randint(0, num_classes, (batch,), generator=generator).to(self.device)
        self.backbone.train()
        # fp16 needs loss scaling (its gradients underflow); bf16 has fp32's exponent range.
        self.scaler = None
        if precision == "fp16":
            self.scaler = (torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler")
                           else torch.cuda.amp.GradScaler())
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            embeddings = self.backbone(self.images)
        loss = self.head(embeddings.float(), self.labels)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach().item()  # .item() waits for the device: steps are timed whole


def _send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="iresnet50")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp16 only with --device=cuda")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--num_classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--contiguous", action="store_true",
                        help="NCHW-contiguous tensors instead of channels-last")
    parser.add_argument("--count", action="store_true",
                        help="print the parameter counts and exit")
    args = parser.parse_args(argv)
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision=fp16 is for --device=cuda (bf16 on CPU)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device=cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.count:
        _send({backbone: trainable_params(build_backbone(backbone)) for backbone in BACKBONES})
        return
    trainer = Trainer(args.backbone, args.precision, args.batch, args.num_classes,
                      args.image_size, channels_last=not args.contiguous, device=args.device)
    for _ in range(args.warmup):
        trainer.step()
    _send({"ready": True, "backbone_params": trainable_params(trainer.backbone),
           "head_params": trainable_params(trainer.head), "torch": torch.__version__,
           "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "memory_format": "contiguous" if args.contiguous else "channels_last",
           "device": (torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu")})
    for line in sys.stdin:
        steps = int(line)
        start = time.perf_counter()
        loss = 0.0
        for _ in range(steps):
            loss = trainer.step()
        _send({"seconds_per_step": (time.perf_counter() - start) / steps,
               "loss": loss if math.isfinite(loss) else None})


if __name__ == "__main__":
    main()
