"""PyTorch twins of the zoo's ``resnet20`` and ``resnet50``, for ``bench_training.py --pytorch``.

The issue measures the product against PyTorch on the same CPU, so the benchmark needs the same
networks in PyTorch: ResNet-20 as He et al. (2016) define it for CIFAR (3x3 stem, 16-32-64
basic blocks, parameter-free shortcuts that subsample and pad channels with zeros, the zoo's
``shortcut: zeropad``) and ResNet-50 as torchvision builds it (v1.5: stride on the 3x3 conv,
projection shortcuts). torchvision has no CIFAR ResNets, and importing it is not needed for
ResNet-50 either, so both are written here; ``trainable_parameters`` lets the benchmark check
that each twin has exactly the zoo model's trainable parameter count.

The training step is what a PyTorch user writes first: float32, NCHW, ``torch.optim.SGD`` with
momentum, ``cross_entropy``, on random tensors, with ``torch.set_num_threads(os.cpu_count())``.
``precision="bfloat16"`` runs the forward pass under ``torch.autocast("cpu", torch.bfloat16)``,
PyTorch's mixed precision, for CPUs where the product trains in bfloat16.
"""
from __future__ import annotations

import os
import time

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, filters: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        self.pad = filters - inputs
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, ::self.stride, ::self.stride],
                             (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.project = None
        if stride != 1 or inputs != 4 * width:
            self.project = nn.Sequential(nn.Conv2d(inputs, 4 * width, 1, stride, bias=False),
                                         nn.BatchNorm2d(4 * width))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.project is None else self.project(x)))


def _stages(block, inputs: int, widths, layers, expansion: int):
    modules = []
    for stage, (width, count) in enumerate(zip(widths, layers)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            modules.append(block(inputs, width, stride))
            inputs = width * expansion
    return nn.Sequential(*modules), inputs


def resnet20(num_classes: int) -> nn.Module:
    stages, features = _stages(BasicBlock, 16, (16, 32, 64), (3, 3, 3), 1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(features, num_classes))


def resnet50(num_classes: int) -> nn.Module:
    stages, features = _stages(Bottleneck, 64, (64, 128, 256, 512), (3, 4, 6, 3), 4)
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(features, num_classes))


MODELS = {"resnet20": resnet20, "resnet50": resnet50}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(arch: str, classes: int, batch: int, size: int, steps: int, seconds: float,
            precision: str = "float32") -> dict:
    """Images/s and CPU-seconds per 1,000 images of plain training steps."""
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = MODELS[arch](classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randint(0, 256, (batch, 3, size, size)).float()
    labels = torch.randint(0, classes, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()

    for _ in range(min(steps, 4)):        # warm-up, as the Keras rows' first fit call
        step()
    done, wall, cpu = 0, 0.0, 0.0
    while done == 0 or wall < seconds:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
        done += steps * batch
    return {"images_per_s": done / wall, "cpu_s_per_1k_images": 1000 * cpu / done,
            "images": done, "precision": precision, "onednn": torch.backends.mkldnn.is_available(),
            "trainable_parameters": trainable_parameters(model),
            "framework": f"PyTorch {torch.__version__}"}
