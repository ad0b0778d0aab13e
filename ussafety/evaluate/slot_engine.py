"""The ``slots`` generation engine: a greedy decode loop over a preallocated slot cache.

Why our own loop: HF ``generate`` keeps every row of a batch until the longest answer ends
and realigns padding; here finished rows leave at once, freed slots are refilled from the
queue and the prompts' common prefix is computed once (see
:mod:`ussafety.evaluate.generate` for the design and when it is used).
:func:`ussafety.evaluate.generate.generate` is the entry point; this module holds the
cache (:class:`SlotCache`) and one decoding job (:class:`SlotDecoder`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

#: Prompt tokens per prefill forward: big enough for efficient matrix products, small
#: enough that the padded attention scores of long prompts stay in memory.
PREFILL_TOKENS = 4096


def hf_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all ``seqs``."""
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


class SlotCache(Cache):
    """Key/value cache of ``slots`` rows x ``columns`` positions per layer, written in place.

    The decoder sets :attr:`rows` (active rows are slots ``0..rows-1`` while decoding, or
    the slots being prefilled), and :attr:`write_cols` (decode: one column per row) or
    :attr:`write_start` (prefill: the first column of the block) before each forward;
    :meth:`update` writes the new keys/values there and returns the views up to
    :attr:`width`, the columns the forward's mask covers. Layers are allocated on their
    first update (their head count, head size and dtype come from the model's tensors).
    """

    def __init__(self, num_layers: int, slots: int, columns: int) -> None:
        super().__init__(layers=[DynamicLayer() for _ in range(num_layers)])
        self.slots, self.columns = slots, columns
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.rows = slice(0, 0)
        self.write_cols: torch.Tensor | None = None
        self.write_start = 0
        self.width = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._buffers(layer_idx, key_states, value_states)
        rows = self.rows
        if self.write_cols is not None:  # decode: one new column per row, each at its own place
            idx = torch.arange(rows.start, rows.stop, device=keys.device)
            keys[idx, :, self.write_cols] = key_states[:, :, 0]
            values[idx, :, self.write_cols] = value_states[:, :, 0]
        else:
            n = key_states.shape[2]
            keys[rows, :, self.write_start : self.write_start + n] = key_states
            values[rows, :, self.write_start : self.write_start + n] = value_states
        return keys[rows, :, : self.width], values[rows, :, : self.width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def _buffers(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's key and value buffers, allocated like ``k``/``v`` on first use."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            keys = k.new_zeros((self.slots, k.shape[1], self.columns, k.shape[3]))
            values = v.new_zeros((self.slots, v.shape[1], self.columns, v.shape[3]))
            self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def block(self, row: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, row ``row``'s first ``width`` columns as ``[1, heads, width, dim]``."""
        return [
            (k[row : row + 1, :, :width], v[row : row + 1, :, :width])
            for k, v in zip(self.keys, self.values)
            if k is not None and v is not None
        ]

    def copy_rows(self, src: int, dst: int, width: int) -> None:
        """Move row ``src`` into slot ``dst`` (its first ``width`` columns)."""
        for buf in (*self.keys, *self.values):
            if buf is not None:
                buf[dst, :, :width] = buf[src, :, :width]

    def fill(self, rows: slice, block: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a ``[1, heads, P, dim]`` prefix block into columns ``0..P-1`` of ``rows``."""
        for layer, (k, v) in enumerate(block):
            keys, values = self._buffers(layer, k, v)
            keys[rows, :, : k.shape[2]] = k
            values[rows, :, : v.shape[2]] = v

    def resize(self, slots: int, columns: int, keep_rows: int, keep_width: int) -> None:
        """Reallocate to ``slots`` x ``columns``, keeping the first rows' first columns."""
        for bufs in (self.keys, self.values):
            for layer, buf in enumerate(bufs):
                if buf is not None:
                    new = buf.new_zeros((slots, buf.shape[1], columns, buf.shape[3]))
                    new[:keep_rows, :, :keep_width] = buf[:keep_rows, :, :keep_width]
                    bufs[layer] = new
        self.slots, self.columns = slots, columns


class SlotDecoder:
    """One greedy decoding job: a queue of prompts, a slot cache, and the active rows.

    Row state lives in Python lists indexed by slot (``0..n-1`` are active):
    ``prompt`` (caller's index), ``tokens`` (generated so far), ``pos`` (next position id:
    real tokens before it) and ``col`` (next cache column: real and padding columns
    before it). ``valid[slot, column]`` says which cache columns hold real tokens; it is the
    attention mask.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_new_tokens: int,
        batch_size: int,
        kv_budget_bytes: int,
        progress: Callable[[int], None] | None,
        stats: dict[str, Any],
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.stats = stats
        self.max_new = max_new_tokens
        self.batch_size = batch_size
        self.progress = progress
        base = hf_model(model)
        self.config = base.config
        self.device = next(model.parameters()).device
        self.dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        self.eager = self.config._attn_implementation == "eager"
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        heads = getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads
        head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads
        elem = torch.tensor([], dtype=self.dtype).element_size()
        self.column_bytes = 2 * self.config.num_hidden_layers * heads * head_dim * elem
        self.kv_budget = kv_budget_bytes

    # -- planning ---------------------------------------------------------------------
    def _slots_for(self, columns: int) -> int:
        """Rows that fit the cache budget at ``columns`` columns (at least one)."""
        return max(1, min(self.batch_size, self.kv_budget // (self.column_bytes * columns)))

    def run(self, prompts: list[str]) -> list[str]:
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if any(len(x) == 0 for x in ids):
            raise ValueError("cannot generate from an empty prompt (it has no token)")
        # the shared prefix must leave each prompt one token of its own: the prefill's
        # last position gives that row's first new token
        self.prefix_len = min(common_prefix(ids), min(len(x) for x in ids) - 1)
        self.suffixes = [x[self.prefix_len :] for x in ids]
        self.stats["prompt_tokens"] = sum(len(x) for x in ids)
        self.stats["prefix_tokens"] = self.prefix_len
        self.prefix_kv = self._run_prefix(ids[0][: self.prefix_len])
        queue = deque(sorted(range(len(ids)), key=lambda i: -len(ids[i])))

        columns = self.prefix_len + len(self.suffixes[queue[0]]) + self.max_new
        slots = min(self._slots_for(columns), len(queue))
        self.cache = SlotCache(self.config.num_hidden_layers, slots, columns)
        self.valid = torch.zeros((slots, columns), dtype=torch.bool, device=self.device)
        self.prompt: list[int] = []
        self.tokens: list[list[int]] = []
        self.pos: list[int] = []
        self.col: list[int] = []
        self.out: list[str] = [""] * len(prompts)
        self.refill_at = max(1, slots // 8)

        while queue or self.prompt:
            free = self.cache.slots - len(self.prompt)
            if queue and (not self.prompt or free >= self.refill_at):
                self._refill(queue)
            if self.prompt:
                self._step()
        return self.out

    def _run_prefix(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of the shared prefix, computed once (batch of one)."""
        if not prefix:
            return []
        p = len(prefix)
        cache = SlotCache(self.config.num_hidden_layers, 1, p)
        cache.rows, cache.write_start, cache.width = slice(0, 1), 0, p
        cols = torch.arange(p, device=self.device)
        causal = cols[None, :] <= cols[:, None]
        self.model(
            input_ids=torch.tensor([prefix], device=self.device),
            position_ids=cols[None],
            attention_mask=self._mask(causal[None, None]),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return cache.block(0, p)

    # -- cache layout -------------------------------------------------------------------
    def _refill(self, queue: deque[int]) -> None:
        """Prefill prompts from the queue into the free slots, resizing the cache first
        when the rows to come need far fewer columns than it has (or allow more rows)."""
        n = len(self.prompt)
        longest_new = len(self.suffixes[queue[0]])
        need_new = self.prefix_len + longest_new + self.max_new
        need_old = max((c + self.max_new - len(t) for c, t in zip(self.col, self.tokens)), default=0)
        columns = max(need_new, need_old)
        slots = max(n + 1, min(self._slots_for(columns), n + len(queue)))
        if columns < 0.75 * self.cache.columns or slots > self.cache.slots or columns > self.cache.columns:
            width = max(self.col, default=0)
            self.cache.resize(slots, columns, n, width)
            valid = torch.zeros((slots, columns), dtype=torch.bool, device=self.device)
            valid[:n, :width] = self.valid[:n, :width]
            self.valid = valid
            self.refill_at = max(1, slots // 8)
        take = min(self.cache.slots - n, len(queue))
        while take > 0:
            s = len(self.suffixes[queue[0]])
            m = max(1, min(take, PREFILL_TOKENS // max(1, s)))
            batch = [queue.popleft() for _ in range(m)]
            self._prefill(batch)
            take -= m

    def _prefill(self, batch: list[int]) -> None:
        """Run the suffixes of ``batch`` (left-padded to one width, placed after the
        prefix columns) through the model and append the rows with their first token."""
        n, m, p = len(self.prompt), len(batch), self.prefix_len
        s = max(len(self.suffixes[i]) for i in batch)
        rows = slice(n, n + m)
        ids = torch.full((m, s), self.pad, dtype=torch.long)
        positions = torch.full((m, s), p, dtype=torch.long)
        self.valid[rows] = False
        self.valid[rows, :p] = True
        for r, i in enumerate(batch):
            suf = self.suffixes[i]
            ids[r, s - len(suf) :] = torch.tensor(suf)
            positions[r, s - len(suf) :] = torch.arange(p, p + len(suf))
            self.valid[n + r, p + s - len(suf) : p + s] = True
        width = p + s
        if p:
            self.cache.fill(rows, self.prefix_kv)
        # query at column p+q sees the valid columns up to itself; padding queries also see
        # themselves, so no row of the mask is empty (an empty row makes NaN keys/values)
        cols = torch.arange(width, device=self.device)
        qcols = torch.arange(p, width, device=self.device)
        causal = cols[None, :] <= qcols[:, None]
        mask = (self.valid[rows, None, :width] & causal[None]) | (cols[None, None, :] == qcols[None, :, None])
        self.cache.rows, self.cache.write_cols, self.cache.write_start = rows, None, p
        self.cache.width = width
        logits = self.model(
            input_ids=ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=self._mask(mask[:, None]),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
        first = logits[:, -1].argmax(-1).tolist()
        self.stats["decoded_tokens"] += m
        for r, i in enumerate(batch):
            self.prompt.append(i)
            self.tokens.append([first[r]])
            self.pos.append(p + len(self.suffixes[i]))
            self.col.append(width)
        self._retire()

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4-D mask the attention kernel takes: boolean for sdpa, additive for eager."""
        if not self.eager:
            return allowed
        return torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill(
            ~allowed, torch.finfo(self.dtype).min
        )

    # -- decoding ---------------------------------------------------------------------
    def _step(self) -> None:
        """One token for every active row."""
        n = len(self.prompt)
        rows = slice(0, n)
        cols = torch.tensor(self.col, device=self.device)
        self.valid[torch.arange(n, device=self.device), cols] = True
        width = max(self.col) + 1
        ids = torch.tensor([[t[-1]] for t in self.tokens], device=self.device)
        positions = torch.tensor(self.pos, device=self.device)[:, None]
        self.cache.rows, self.cache.write_cols, self.cache.width = rows, cols, width
        logits = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=self._mask(self.valid[rows, None, None, :width]),
            past_key_values=self.cache,
            use_cache=True,
        ).logits
        nxt = logits[:, -1].argmax(-1).tolist()
        self.stats["decoded_tokens"] += n
        for r in range(n):
            self.tokens[r].append(nxt[r])
            self.pos[r] += 1
            self.col[r] += 1
        self._retire()

    def _retire(self) -> None:
        """Decode finished rows and close their gaps by moving the last rows into them."""
        done = [
            r
            for r, t in enumerate(self.tokens)
            if len(t) >= self.max_new or (self.eos is not None and t[-1] == self.eos)
        ]
        for r in reversed(done):  # descending, so a moved-in row is never a pending one
            i = self.prompt[r]
            self.stats["new_tokens"] += len(self.tokens[r])
            self.out[i] = self.tokenizer.decode(self.tokens[r], skip_special_tokens=True).strip()
            last = len(self.prompt) - 1
            if r != last:
                self.cache.copy_rows(last, r, self.col[last])
                self.valid[r] = self.valid[last]
                self.prompt[r], self.tokens[r] = self.prompt[last], self.tokens[last]
                self.pos[r], self.col[r] = self.pos[last], self.col[last]
            self.prompt.pop()
            self.tokens.pop()
            self.pos.pop()
            self.col.pop()
        if done and self.progress:
            self.progress(len(done))
