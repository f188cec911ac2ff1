"""Small 1-D signal models for the zoo and probe tests: one takes sequences of one length
only (`zoo add --input-size`), the other any length. Importable as ``signal_nets:fixed``."""
from torch import nn


class FixedLength(nn.Module):
    """A 1-D model whose head reads a flattened map: it takes sequences of length 100 only."""

    def __init__(self, num_classes: int = 4, in_chans: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(in_chans, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8 * 100, num_classes)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


class AnyLength(nn.Module):
    """The same layers with a pooled head: any length."""

    def __init__(self, num_classes: int = 4, in_chans: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(in_chans, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.bn(self.conv(x)).relu()).flatten(1))


def fixed(num_classes: int = 4, in_chans: int = 2) -> nn.Module:
    return FixedLength(num_classes, in_chans)


def anylen(num_classes: int = 4, in_chans: int = 2) -> nn.Module:
    return AnyLength(num_classes, in_chans)


class GateFirst(nn.Module):
    """FixedLength with an ECA-style gate (a Conv1d over the channels, 1 → 1) registered
    before the stem that reads the input: the first registered conv is not the input's."""

    def __init__(self, num_classes: int = 4, in_chans: int = 2):
        super().__init__()
        self.gate = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.conv = nn.Conv1d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 100, num_classes)

    def forward(self, x):
        y = self.conv(x)
        w = self.gate(y.mean(2, keepdim=True).transpose(1, 2)).transpose(1, 2).sigmoid()
        return self.fc((y * w).relu().flatten(1))


def gate_first(num_classes: int = 4, in_chans: int = 2) -> nn.Module:
    return GateFirst(num_classes, in_chans)
