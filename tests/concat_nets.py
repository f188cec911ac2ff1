"""Small networks whose layers read concatenations (DenseNet- and GhostNet-like), shared by the
tracing and growth tests."""
import torch
from torch import nn


class TinyDense(nn.Module):
    """A stem and a dense block: every layer reads the concatenation of all earlier outputs."""

    def __init__(self, width: int = 8, growth: int = 4, layers: int = 2, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(width + i * growth), nn.ReLU(),
                          nn.Conv2d(width + i * growth, growth, 3, padding=1))
            for i in range(layers))
        self.norm = nn.BatchNorm2d(width + layers * growth)
        self.head = nn.Linear(width + layers * growth, classes)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.head(self.norm(torch.cat(feats, 1)).relu().mean((2, 3)))


class TinyGhost(nn.Module):
    """GhostNet's module: a conv, a depthwise conv on its output, both concatenated and cut to
    `out` channels, added to a shortcut; then (`split`) a split in two halves, or a head."""

    def __init__(self, width: int = 6, out: int = 10, classes: int = 3, split: bool = True):
        super().__init__()
        self.split = split
        self.stem = nn.Conv2d(3, out, 3, padding=1)
        self.primary = nn.Conv2d(out, width, 1)
        self.cheap = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.mix = nn.Conv2d(out, out, 1)
        self.left = nn.Linear(out // 2, classes)
        self.head = nn.Linear(out, classes)
        self.out = out

    def forward(self, x):
        x = self.stem(x)
        a = self.primary(x)
        y = torch.cat([a, self.cheap(a)], dim=1)[:, :self.out] + x
        pooled = self.mix(y).mean((2, 3))
        if not self.split:
            return self.head(pooled)
        left, right = pooled.split(self.out // 2, dim=1)
        return self.left(left) + right.sum(1, keepdim=True)


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
                                    nn.ReLU(), nn.Conv2d(width, width, 1), nn.BatchNorm2d(width))

    def forward(self, x):
        return x + self.branch(x)


class TinyCSP(nn.Module):
    """A cross-stage partial stage: one conv's output split in two halves, residual blocks on
    the first, both halves concatenated again."""

    def __init__(self, width: int = 8, depth: int = 1, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.exp = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.BatchNorm2d(2 * width))
        self.blocks = nn.Sequential(*(_Residual(width) for _ in range(depth)))
        self.transition = nn.Conv2d(2 * width, 2 * width, 1)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        a, b = self.exp(self.stem(x)).chunk(2, dim=1)
        return self.head(self.transition(torch.cat([self.blocks(a), b], dim=1)).mean((2, 3)))


class TinyRes2(nn.Module):
    """Res2Net's block: a conv's output split in `scale` pieces; each piece is *added* to the
    previous piece's output before its own conv, and the outputs are concatenated."""

    def __init__(self, width: int = 4, scale: int = 2, classes: int = 3):
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, width * scale, 1)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
            for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(width * scale, 8, 1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        pieces = self.conv1(x).split(self.width, dim=1)
        outs, sp = [], None
        for conv, piece in zip(self.convs, pieces):
            sp = conv(piece if sp is None else sp + piece)
            outs.append(sp)
        return self.head(self.conv3(torch.cat(outs + [pieces[-1]], dim=1)).mean((2, 3)))
