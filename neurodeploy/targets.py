"""Hardware targets as data: numerics, core limits and energy figures read from TOML.

A target is a TOML file in the repository's ``targets/`` folder (``targets/README.md`` documents
the schema). Every number sits in an inline table beside its citation::

    [energy]
    synop_pj = { value = 23.6, source = "davies2018", note = "pre-silicon simulation" }

``source`` may name a key of the file's ``[references]`` table, which is then expanded to the
full reference. An entry needs a non-empty ``source`` or ``note``; ``assumption = true`` marks a
number that is not a published figure. ``inherits = "other"`` takes every section of ``other``
and lets this file override single entries.

Lookup order for a target *name*: the ``targets/`` folder beside the ``neurodeploy`` package
(a source checkout), then every folder in ``$NEURODEPLOY_TARGETS`` (``os.pathsep``-separated).
A string ending in ``.toml`` or containing a path separator is read as a path.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import NeurodeployError

ENV_VAR = "NEURODEPLOY_TARGETS"
_TOP_LEVEL_KEYS = {
    "name",
    "description",
    "inherits",
    "ann_reference",
    "references",
    "backend",
    "numerics",
    "limits",
    "energy",
    "ann",
}
_ENTRY_KEYS = {"value", "source", "note", "assumption"}


class TargetError(NeurodeployError, ValueError):
    """A target file is missing or invalid. The message names the file and the field."""

    def __init__(self, path: str | Path | None, field: str | None, problem: str):
        self.path = None if path is None else str(path)
        self.field = field
        where = ": ".join(x for x in (self.path, field) if x)
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class Citation:
    """Where one number comes from."""

    value: float
    source: str = ""
    note: str = ""
    assumption: bool = False

    def text(self) -> str:
        parts = [p for p in (self.source, self.note) if p]
        prefix = "ASSUMPTION: " if self.assumption else ""
        return prefix + "; ".join(parts)


@dataclass(frozen=True)
class Numerics:
    """Fixed-point widths of the neuron and synapse state (bits unless named otherwise)."""

    weight_bits: int  # synaptic weight mantissa
    state_bits: int  # width of each state variable (u, v)
    state_vars_per_neuron: int  # state words per compartment (u and v -> 2)
    decay_bits: int  # decay constants are fractions of 2**decay_bits
    vth_bits: int  # threshold mantissa
    vth_shift: int  # threshold is compared as vth << vth_shift
    bias_mant_bits: int  # signed bias mantissa
    bias_exp_max: int  # largest bias exponent
    act_shift: int  # synaptic input is added as a_in << act_shift
    max_delay_steps: int | None = None  # largest synaptic delay, if delays are supported
    per_neuron_vth: int = 0  # 1: thresholds may differ between neurons of a layer, else 0


@dataclass(frozen=True)
class CoreLimits:
    """Per-core resources and chip geometry used by :mod:`neurodeploy.energy.mapping`.

    Synapse memory follows nengo-loihi's accounting: each input axon stores its synapses in
    blocks of ``synapses_per_block``; a block costs ``synapse_block_header_bits`` plus
    ``weight_bits + index_bits`` per synapse, rounded up to whole ``synapse_word_bits`` words;
    ``index_bits = max(synapse_index_bits_min, ceil(log2(neurons on the core)))``.
    """

    neurons_per_core: int
    synapse_memory_bits: int
    fan_in_axons: int
    fan_out_axons: int
    cores_per_chip: int
    cores_per_tile: int
    mesh_width_tiles: int
    mesh_height_tiles: int
    synapse_word_bits: int
    synapse_block_header_bits: int
    synapses_per_block: int
    synapse_index_bits_min: int


@dataclass(frozen=True)
class EnergyModel:
    """Per-event energies of a neuromorphic chip, in picojoules."""

    synop_pj: float  # one synaptic operation (spike x synapse)
    neuron_update_active_pj: float  # neuron update with synaptic input or a spike
    neuron_update_inactive_pj: float  # neuron update without input
    spike_in_tile_pj: float  # one spike message delivered (charged per destination core)
    hop_ew_pj: float  # one east-west router hop
    hop_ns_pj: float  # one north-south router hop
    synaptic_update_pj: float | None = None  # learning (not used for inference)


@dataclass(frozen=True)
class AnnEnergy:
    """Arithmetic energies of a conventional accelerator, in picojoules."""

    mac_fp32_pj: float
    mult_fp32_pj: float
    add_fp32_pj: float
    ac_fp32_pj: float  # an accumulate = one fp32 add
    mac_int8_pj: float
    mult_int8_pj: float
    add_int8_pj: float
    add_int32_pj: float | None = None
    mult_int32_pj: float | None = None
    memory_access_pj: float | None = None


_SECTIONS: dict[str, type] = {
    "numerics": Numerics,
    "limits": CoreLimits,
    "energy": EnergyModel,
    "ann": AnnEnergy,
}
# limits that must be strictly positive (a zero would make every layer fail to map)
# yes/no capabilities, written as 0 or 1 (every value is a number with its citation)
_FLAGS = {"numerics.per_neuron_vth"}
_POSITIVE = {
    "numerics.weight_bits",
    "numerics.state_bits",
    "numerics.state_vars_per_neuron",
    "limits.neurons_per_core",
    "limits.synapse_memory_bits",
    "limits.fan_in_axons",
    "limits.fan_out_axons",
    "limits.cores_per_chip",
    "limits.cores_per_tile",
    "limits.mesh_width_tiles",
    "limits.mesh_height_tiles",
    "limits.synapse_word_bits",
    "limits.synapses_per_block",
}


@dataclass(frozen=True)
class Target:
    """A loaded, validated target."""

    name: str
    description: str
    path: Path
    numerics: Numerics | None
    limits: CoreLimits | None
    energy: EnergyModel | None
    ann: AnnEnergy | None
    ann_reference: str | None
    backend: Mapping[str, str] = field(default_factory=dict)
    citations: Mapping[str, Citation] = field(default_factory=dict)
    inherits: tuple[str, ...] = ()

    def citation(self, key: str) -> Citation:
        """The citation of a number, by dotted key such as ``"energy.synop_pj"``."""
        try:
            return self.citations[key]
        except KeyError:
            raise TargetError(self.path, key, "no such number in this target") from None

    def require(self, section: str):
        """Return a section, or raise :class:`TargetError` if the target lacks it."""
        value = getattr(self, section, None)
        if value is None:
            raise TargetError(self.path, section, f"target {self.name!r} has no [{section}]")
        return value

    @property
    def assumptions(self) -> dict[str, Citation]:
        """The numbers marked ``assumption = true``."""
        return {k: c for k, c in self.citations.items() if c.assumption}


def builtin_targets_dir() -> Path:
    """The ``targets/`` folder of a source checkout (beside the ``neurodeploy`` package)."""
    return Path(__file__).resolve().parent.parent / "targets"


def search_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``, in order."""
    dirs = []
    builtin = builtin_targets_dir()
    if builtin.is_dir():
        dirs.append(builtin)
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    return dirs


def list_targets() -> list[str]:
    """Names of every target found on the search path."""
    names: set[str] = set()
    for d in search_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or os.sep in spec or (os.altsep or os.sep) in spec


def resolve_target_path(spec: str | os.PathLike, near: Path | None = None) -> Path:
    """Find the TOML file for a target name or path."""
    if isinstance(spec, os.PathLike) or _looks_like_path(str(spec)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise TargetError(path, None, "target file not found")
        return path
    name = str(spec)
    dirs = ([near] if near is not None else []) + search_dirs()
    for d in dirs:
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_targets()) or "none"
    looked = ", ".join(str(d) for d in dirs) or f"(no folders; set ${ENV_VAR})"
    raise TargetError(None, None, f"unknown target {name!r}; known: {known}; searched {looked}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(path, None, f"invalid TOML: {e}") from None
    except OSError as e:
        raise TargetError(path, None, f"cannot read: {e.strerror or e}") from None


def _merged_raw(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Raw TOML of ``path`` with its ``inherits`` chain applied; entries keep their file."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise TargetError(path, "inherits", f"inheritance cycle: {chain}")
    raw = _read_toml(path)
    unknown = set(raw) - _TOP_LEVEL_KEYS
    if unknown:
        allowed = sorted(_TOP_LEVEL_KEYS)
        raise TargetError(path, sorted(unknown)[0], f"unknown key; allowed: {allowed}")
    refs = raw.get("references", {})
    if not isinstance(refs, dict) or not all(isinstance(v, str) for v in refs.values()):
        raise TargetError(path, "references", "must be a table of strings")
    # tag every entry with the file it came from and expand reference keys now, so that an
    # inherited entry keeps its own file's references
    tagged: dict[str, Any] = {
        k: v for k, v in raw.items() if k not in _SECTIONS and k != "references"
    }
    for section in _SECTIONS:
        if section not in raw:
            continue
        table = raw[section]
        if not isinstance(table, dict):
            raise TargetError(path, section, "must be a table")
        tagged[section] = {}
        for key, entry in table.items():
            tagged[section][key] = (path, _expand_refs(entry, refs))
    parents: tuple[str, ...] = ()
    parent_name = raw.get("inherits")
    if parent_name is None:
        return tagged, parents
    if not isinstance(parent_name, str) or not parent_name:
        raise TargetError(path, "inherits", "must be the name or path of another target")
    parent_path = resolve_target_path(parent_name, near=path.parent)
    base, grand = _merged_raw(parent_path, (*seen, path.resolve()))
    # name and description are never inherited; sections merge entry by entry
    merged = {k: v for k, v in base.items() if k not in ("name", "description")}
    for key, value in tagged.items():
        if key in _SECTIONS:
            merged[key] = {**merged.get(key, {}), **value}
        elif key != "inherits":
            merged[key] = value
    return merged, (parent_name, *grand)


def _expand_refs(entry: Any, refs: dict[str, str]) -> Any:
    if isinstance(entry, dict) and isinstance(entry.get("source"), str):
        src = entry["source"]
        if src in refs:
            return {**entry, "source": f"{refs[src]} [{src}]"}
    return entry


def _parse_entry(path: Path, key: str, entry: Any, want_int: bool) -> Citation:
    if not isinstance(entry, dict):
        raise TargetError(
            path, key, "must be an inline table { value = ..., source = \"...\" }, "
            f"got {type(entry).__name__} {entry!r}"
        )
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        allowed = sorted(_ENTRY_KEYS)
        raise TargetError(path, key, f"unknown key(s) {sorted(unknown)}; allowed {allowed}")
    if "value" not in entry:
        raise TargetError(path, key, "missing 'value'")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetError(path, key, f"value must be a number, got {value!r}")
    if want_int and not isinstance(value, int):
        if float(value).is_integer():
            value = int(value)
        else:
            raise TargetError(path, key, f"value must be an integer, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise TargetError(path, key, f"value must be finite and >= 0, got {value!r}")
    if key in _POSITIVE and value <= 0:
        raise TargetError(path, key, f"value must be > 0, got {value!r}")
    if key in _FLAGS and value not in (0, 1):
        raise TargetError(path, key, f"value must be 0 or 1, got {value!r}")
    source, note = entry.get("source", ""), entry.get("note", "")
    for what, text in (("source", source), ("note", note)):
        if not isinstance(text, str):
            raise TargetError(path, key, f"'{what}' must be a string")
    if not (source.strip() or note.strip()):
        raise TargetError(path, key, "missing citation: give a non-empty 'source' or 'note'")
    assumption = entry.get("assumption", False)
    if not isinstance(assumption, bool):
        raise TargetError(path, key, "'assumption' must be true or false")
    return Citation(value=value, source=source.strip(), note=note.strip(), assumption=assumption)


def _is_int_field(f: dataclasses.Field) -> bool:
    return "int" in str(f.type)


def _build_section(name: str, entries: dict[str, tuple[Path, Any]], own_path: Path, cites: dict):
    cls = _SECTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, (src_path, _) in entries.items():
        if key not in fields:
            allowed = sorted(fields)
            raise TargetError(src_path, f"{name}.{key}", f"unknown field; allowed: {allowed}")
    kwargs: dict[str, Any] = {}
    for fname, f in fields.items():
        dotted = f"{name}.{fname}"
        if fname not in entries:
            if f.default is dataclasses.MISSING:
                raise TargetError(own_path, dotted, "missing required field")
            continue
        src_path, entry = entries[fname]
        cite = _parse_entry(src_path, dotted, entry, _is_int_field(f))
        cites[dotted] = cite
        kwargs[fname] = cite.value
    return cls(**kwargs)


def _check_ann_consistency(path: Path, ann: AnnEnergy) -> None:
    for mac, mult, add, label in (
        (ann.mac_fp32_pj, ann.mult_fp32_pj, ann.add_fp32_pj, "fp32"),
        (ann.mac_int8_pj, ann.mult_int8_pj, ann.add_int8_pj, "int8"),
    ):
        if not math.isclose(mac, mult + add, rel_tol=1e-9, abs_tol=1e-12):
            raise TargetError(
                path, f"ann.mac_{label}_pj",
                f"{mac} pJ is not mult_{label}_pj + add_{label}_pj = {mult} + {add} = {mult + add}",
            )


def load_target(spec: str | os.PathLike | Target) -> Target:
    """Load and validate a target by name (``"loihi"``) or path (``"my/chip.toml"``)."""
    if isinstance(spec, Target):
        return spec
    path = resolve_target_path(spec)
    raw, parents = _merged_raw(path)
    for key in ("name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise TargetError(path, key, "missing required string")
    ann_ref = raw.get("ann_reference")
    if ann_ref is not None and (not isinstance(ann_ref, str) or not ann_ref):
        raise TargetError(path, "ann_reference", "must name another target")
    backend = raw.get("backend", {})
    if not isinstance(backend, dict) or not all(isinstance(v, str) for v in backend.values()):
        raise TargetError(path, "backend", "must be a table of strings")
    cites: dict[str, Citation] = {}
    sections = {
        name: _build_section(name, raw[name], path, cites) if name in raw else None
        for name in _SECTIONS
    }
    if not any(sections.values()):
        raise TargetError(path, None, f"defines none of the sections {sorted(_SECTIONS)}")
    if sections["ann"] is not None:
        _check_ann_consistency(path, sections["ann"])
    return Target(
        name=raw["name"].strip(),
        description=raw["description"].strip(),
        path=path,
        numerics=sections["numerics"],
        limits=sections["limits"],
        energy=sections["energy"],
        ann=sections["ann"],
        ann_reference=ann_ref,
        backend=MappingProxyType(dict(backend)),
        citations=MappingProxyType(cites),
        inherits=parents,
    )
