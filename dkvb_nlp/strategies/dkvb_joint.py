"""DKVB trained i.i.d. (upper bound): the same keys, values re-trained on every task seen so far.

At task t the values (and any decoder, and an order-free rule's statistics) are reset to their
initialisation and trained with DKVB's value rule on the union of the training splits of tasks
0..t, shuffled together: the i.i.d. DKVB on the data seen so far, next to which
class-incremental `dkvb` is measured. The keys are DKVB's own (initialised once without labels,
frozen), so the cached key indices and every option mean the same as for `dkvb`; `epochs` are
passes over the union. With an order-free rule its last row equals `dkvb`'s (tested).
"""

from __future__ import annotations

import torch

from ..bottleneck.index_store import IndexRows
from .dkvb import DKVBStrategy


class DKVBJointStrategy(DKVBStrategy):
    """DKVB whose values are re-trained from their initialisation on the union of tasks 0..t."""

    name = "dkvb_joint"

    def reset_values(self) -> None:
        """Rebuild the value tables and decoders from scratch, keeping the frozen keys."""
        keys = {k: v.clone() for k, v in self.front.state_dict().items() if k in ("keys", "keys_initialized")}
        self._build()
        missing, unexpected = self.front.load_state_dict(keys, strict=False)
        assert not unexpected and "keys" not in missing

    def learn(self, task_id: int) -> None:
        stream = self.ctx.stream
        self.reset_values()
        gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id))
        by_head: dict[int, list] = {}
        for t in range(task_id + 1):
            data = self.ctx.split(t, "train")
            by_head.setdefault(data.head, []).append((self.indices(data), torch.tensor(data.labels, dtype=torch.long)))
        for h, parts in sorted(by_head.items()):
            head = self.heads[h]
            if stream.num_heads == 1:
                grow = self._classes_needed(task_id, 0) - head.num_classes
                if grow > 0:
                    head.add_classes(grow)
            # The union, gathered batch by batch from each split's (memory-mapped) indices:
            # the same batches as the splits concatenated (token axes padded with -1), without concatenating them.
            idx, labels = IndexRows([i for i, _ in parts]), torch.cat([y for _, y in parts])
            # The same rule as `dkvb` (tests check that task 0 gives identical values); i.i.d.,
            # so the loss always covers every class seen.
            self._fit(head, idx, labels, gen)
