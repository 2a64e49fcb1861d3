"""A third-party layer shipped in its own distribution, registered through `zoo.layers`."""

from dataclasses import dataclass, field

import torch

from zoo.base import MixerConfig, SequenceMixer, zero_padded


@dataclass
class ToyConfig(MixerConfig):
    """Causal cumulative mean, scaled: a minimal plugin layer."""

    gain: float = field(default=1.0, metadata={"help": "output scale"})


class ToyMixer(SequenceMixer):
    """y_i = gain * mean(x_0..x_i) over valid positions (causal, linear)."""

    config_class = ToyConfig
    supports_causal = False
    complexity = "L"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.weight = torch.nn.Parameter(torch.ones(config.d_model))

    def forward(self, x, key_padding_mask=None):
        self._validate_input(x, key_padding_mask)
        x = zero_padded(x, key_padding_mask)
        count = torch.ones_like(x[..., :1])
        if key_padding_mask is not None:
            count = (~key_padding_mask).unsqueeze(-1).to(x.dtype)
        y = x.cumsum(1) / count.cumsum(1).clamp_min(1)
        return zero_padded(self.config.gain * y * self.weight, key_padding_mask)
