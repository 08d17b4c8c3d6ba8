"""Targets as data: loading, inheritance, lookup and validation messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurodeploy.targets import (
    ENV_VAR,
    Target,
    TargetError,
    builtin_targets_dir,
    list_targets,
    load_target,
)

BUILTIN = ("loihi", "loihi2", "loihi-sim", "ann-45nm")


def test_builtin_targets_are_found_and_listed():
    assert builtin_targets_dir().is_dir()
    assert set(BUILTIN) <= set(list_targets())


@pytest.mark.parametrize("name", BUILTIN)
def test_every_number_has_a_citation(name):
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name and t.description
    assert t.citations
    for key, cite in t.citations.items():
        assert cite.text().strip(), key
        section, field = key.split(".")
        assert getattr(getattr(t, section), field) == cite.value


def test_loihi_figures_from_davies_2018_and_nengo_loihi():
    t = load_target("loihi")
    e, lim, num = t.energy, t.limits, t.numerics
    assert (e.synop_pj, e.neuron_update_active_pj, e.neuron_update_inactive_pj) == (23.6, 81, 52)
    assert (e.spike_in_tile_pj, e.hop_ew_pj, e.hop_ns_pj) == (1.7, 3.0, 4.0)
    assert "Davies" in t.citation("energy.synop_pj").source
    assert (lim.neurons_per_core, lim.fan_in_axons, lim.fan_out_axons) == (1024, 4096, 4096)
    assert lim.synapse_memory_bits == 16384 * 64 and lim.cores_per_chip == 128
    assert "nengo-loihi" in t.citation("limits.neurons_per_core").source
    assert (num.weight_bits, num.state_bits, num.decay_bits, num.vth_bits) == (8, 24, 12, 17)
    assert not t.assumptions
    assert t.ann_reference == "ann-45nm"


def test_loihi2_energy_is_all_stated_assumption():
    t = load_target("loihi2")
    for field in ("synop_pj", "neuron_update_active_pj", "neuron_update_inactive_pj",
                  "spike_in_tile_pj", "hop_ew_pj", "hop_ns_pj"):
        c = t.citation(f"energy.{field}")
        assert c.assumption and c.text().startswith("ASSUMPTION")
    assert t.energy.neuron_update_active_pj == pytest.approx(10 * t.energy.synop_pj)
    assert "10x" in t.citation("energy.neuron_update_active_pj").source


def test_loihi_sim_inherits_loihi2_energy_and_limits():
    sim, l2 = load_target("loihi-sim"), load_target("loihi2")
    assert sim.inherits == ("loihi2",)
    assert sim.energy == l2.energy and sim.limits == l2.limits
    assert sim.citation("energy.synop_pj") == l2.citation("energy.synop_pj")
    assert sim.backend["select_tag"] == "fixed_pt"
    assert sim.numerics.max_delay_steps == 62


def test_ann_45nm_horowitz_figures():
    a = load_target("ann-45nm").ann
    assert a.mac_fp32_pj == 4.6 and a.mult_fp32_pj == 3.7 and a.add_fp32_pj == 0.9
    assert a.ac_fp32_pj == 0.9
    assert a.mac_int8_pj == pytest.approx(a.mult_int8_pj + a.add_int8_pj)
    assert load_target("ann-45nm").energy is None


def test_quantizer_reads_the_numerics_it_needs():
    num = load_target("loihi-sim").numerics
    for field in ("weight_bits", "state_bits", "decay_bits", "vth_bits", "bias_mant_bits",
                  "bias_exp_max", "act_shift"):
        assert isinstance(getattr(num, field), int)


# ------------------------------------------------------------------------------- user targets

MINIMAL = """
name = "tiny"
description = "a test chip"

[energy]
synop_pj = { value = 1.0, source = "made up" }
neuron_update_active_pj = { value = 2.0, note = "made up" }
neuron_update_inactive_pj = { value = 1.0, note = "made up" }
spike_in_tile_pj = { value = 0.5, note = "made up" }
hop_ew_pj = { value = 0.1, note = "made up" }
hop_ns_pj = { value = 0.2, note = "made up" }
"""


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_target_by_path(tmp_path):
    t = load_target(write(tmp_path, MINIMAL))
    assert t.name == "tiny" and t.energy.synop_pj == 1.0 and t.limits is None
    assert load_target(str(tmp_path / "tiny.toml")).energy == t.energy


def test_user_target_by_name_through_env_var(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert load_target("tiny").path == tmp_path / "tiny.toml"
    assert "tiny" in list_targets()


def test_missing_citation_names_file_and_field(tmp_path):
    text = MINIMAL.replace('{ value = 1.0, source = "made up" }', "{ value = 1.0 }")
    p = write(tmp_path, text)
    with pytest.raises(TargetError, match=re.escape(f"{p}: energy.synop_pj: missing citation")):
        load_target(p)


def test_empty_citation_is_rejected(tmp_path):
    p = write(tmp_path, MINIMAL.replace('source = "made up"', 'source = "  "'))
    with pytest.raises(TargetError, match="energy.synop_pj") as e:
        load_target(p)
    assert e.value.path == str(p) and e.value.field == "energy.synop_pj"


def test_bare_number_is_rejected(tmp_path):
    p = write(tmp_path, MINIMAL.replace('{ value = 1.0, source = "made up" }', "1.0"))
    with pytest.raises(TargetError, match="energy.synop_pj: must be an inline table"):
        load_target(p)


def test_missing_required_field(tmp_path):
    text = "\n".join(x for x in MINIMAL.splitlines() if not x.startswith("hop_ns_pj"))
    p = write(tmp_path, text)
    with pytest.raises(TargetError, match=re.escape(f"{p}: energy.hop_ns_pj: missing required")):
        load_target(p)


def test_unknown_field_and_section(tmp_path):
    p = write(tmp_path, MINIMAL + 'synop_nj = { value = 1.0, note = "typo" }\n')
    with pytest.raises(TargetError, match="energy.synop_nj: unknown field"):
        load_target(p)
    p = write(tmp_path, MINIMAL + "[enrgy]\n", "typo.toml")
    with pytest.raises(TargetError, match="enrgy: unknown key"):
        load_target(p)


def test_bad_values(tmp_path):
    for bad, match in (('"23.6"', "must be a number"), ("-1.0", ">= 0"), ("nan", "finite")):
        p = write(tmp_path, MINIMAL.replace("value = 1.0, source", f"value = {bad}, source"))
        with pytest.raises(TargetError, match=f"energy.synop_pj: .*{match}"):
            load_target(p)


def test_integer_fields_and_positive_limits(tmp_path):
    text = (
        'name = "x"\ndescription = "x"\ninherits = "loihi"\n[limits]\n'
        'neurons_per_core = { value = 10.5, note = "n" }\n'
    )
    with pytest.raises(TargetError, match="limits.neurons_per_core: value must be an integer"):
        load_target(write(tmp_path, text))
    with pytest.raises(TargetError, match="limits.neurons_per_core: value must be > 0"):
        load_target(write(tmp_path, text.replace("10.5", "0")))


def test_inherit_and_override_one_entry(tmp_path):
    text = ('name = "myloihi"\ndescription = "loihi with a bigger core"\ninherits = "loihi"\n'
            '[limits]\nneurons_per_core = { value = 2048, note = "what if", assumption = true }\n')
    t = load_target(write(tmp_path, text))
    assert t.limits.neurons_per_core == 2048 and t.limits.fan_in_axons == 4096
    assert t.energy == load_target("loihi").energy
    assert list(t.assumptions) == ["limits.neurons_per_core"]
    assert t.inherits == ("loihi",)


def test_inheritance_cycle(tmp_path):
    write(tmp_path, 'name = "a"\ndescription = "a"\ninherits = "b"\n', "a.toml")
    write(tmp_path, 'name = "b"\ndescription = "b"\ninherits = "a"\n', "b.toml")
    with pytest.raises(TargetError, match="inheritance cycle"):
        load_target(tmp_path / "a.toml")


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match="unknown target 'loihi3'.*loihi2"):
        load_target("loihi3")


def test_inconsistent_mac_is_rejected(tmp_path):
    text = Path(builtin_targets_dir() / "ann-45nm.toml").read_text()
    text = text.replace("value = 4.6,", "value = 4.5,")
    p = write(tmp_path, text, "ann.toml")
    with pytest.raises(TargetError, match=re.escape(f"{p}: ann.mac_fp32_pj")):
        load_target(p)


def test_invalid_toml_names_the_file(tmp_path):
    p = write(tmp_path, "name = \n")
    with pytest.raises(TargetError, match=re.escape(str(p))):
        load_target(p)


def test_target_error_is_a_value_error_and_a_user_error():
    from neurodeploy.errors import NeurodeployError

    assert issubclass(TargetError, ValueError) and issubclass(TargetError, NeurodeployError)
