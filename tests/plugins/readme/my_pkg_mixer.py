# my_pkg/mixer.py
from dataclasses import dataclass

import torch

from zoo import MixerConfig, SequenceMixer, config_field


@dataclass
class MyConfig(MixerConfig):
    """Causal running mean, scaled: a minimal plugin layer."""

    gain: float = config_field(1.0, "output scale")


class MyMixer(SequenceMixer):
    """y_i = gain * mean of the valid x_j, j <= i."""

    config_class = MyConfig            # read by the entry-point loader
    complexity = "L"                   # capabilities: supports_causal, supports_padding_mask, needs_max_len, ...

    def mix(self, x, key_padding_mask=None):
        # SequenceMixer.forward validated x and zeroed its padded positions; it zeroes them in the output too.
        valid = torch.ones_like(x[..., :1]) if key_padding_mask is None else (~key_padding_mask)[..., None].to(x.dtype)
        return self.config.gain * x.cumsum(1) / valid.cumsum(1).clamp_min(1)   # (B, L, D)
