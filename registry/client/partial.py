"""ollama's partial-download layout now lives in the store (store/partial.py); re-exported
here for the pull client's modules."""

from store.partial import (
    MAX_STATE_BYTES,
    Part,
    PartStateJSON,
    StateFiles,
    load_parts,
    partial_path,
    plan_parts,
    remove_states,
    save_all,
    state_files,
    state_path,
    write_state,
)

__all__ = [
    "MAX_STATE_BYTES",
    "Part",
    "PartStateJSON",
    "StateFiles",
    "load_parts",
    "partial_path",
    "plan_parts",
    "remove_states",
    "save_all",
    "state_files",
    "state_path",
    "write_state",
]
