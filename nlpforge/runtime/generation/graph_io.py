"""How a stepper feeds its ONNX graphs and keeps their caches between steps. No torch.

Two ways, the same numbers:

- IO binding (on CUDA): inputs and outputs are OrtValues on the session's device; the cache a
  graph returns is bound as the next call's input without leaving GPU memory, and only the
  logits are copied to the host.
- numpy (on the CPU): ``session.run`` with numpy arrays in and out. CPU memory is the
  device, so nothing is copied either way, and it takes one Python call per step where a
  binding takes one per input and output.

``binding=True`` forces IO binding on the CPU too (the tests run the CUDA code path that way).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlpforge.runtime.providers import session_device


class GraphIO:
    """Feeds the sessions of one stepper (all on the same device)."""

    def __init__(self, session: Any, binding: bool | None = None):
        self.device_type, self.device_id = session_device(session)
        self.binding = self.device_type != "cpu" if binding is None else bool(binding)

    def value(self, array: np.ndarray) -> Any:
        """``array`` as a graph input: an OrtValue on the device, or a contiguous array."""
        array = np.ascontiguousarray(array)
        if not self.binding:
            return array
        from onnxruntime import OrtValue

        return OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)

    def numpy(self, value: Any) -> np.ndarray:
        """A value of this stepper as a host array (a copy only for device memory)."""
        return value.numpy() if self.binding else value

    def take(self, value: Any, index: np.ndarray) -> Any:
        """Rows ``index`` of a cache value (beam search's reordering)."""
        return self.value(self.numpy(value)[index])

    def run(self, session: Any, feeds: dict[str, Any], outputs: list[str]) -> list[Any]:
        """One graph call; outputs as values of this stepper (left on the device)."""
        if not self.binding:
            return session.run(outputs, feeds)
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self.device_type, self.device_id)
        session.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def last_logits(self, value: Any) -> np.ndarray:
        """The logits of each row's last position, ``[batch, vocab]`` float32, our own copy."""
        return np.array(self.numpy(value)[:, -1, :], dtype=np.float32)
