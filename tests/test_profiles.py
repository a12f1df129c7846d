"""Device profiles: the built-in PAC3200 map against the reference sheet, and bad user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from susee.profiles import ProfileError, builtin_names, load_profile

# The reference sheet (shared/reference/pac3200-registers.md), transcribed:
# offset -> unit of the float32 block and of the float64 energy counters.
REFERENCE_F32_UNITS = {
    1: "V", 3: "V", 5: "V", 7: "V", 9: "V", 11: "V",
    13: "A", 15: "A", 17: "A",
    19: "VA", 21: "VA", 23: "VA",
    25: "W", 27: "W", 29: "W",
    31: "var", 33: "var", 35: "var",
    37: "-", 39: "-", 41: "-",
    43: "%", 45: "%", 47: "%", 49: "%", 51: "%", 53: "%",
    55: "Hz", 57: "V", 59: "V", 61: "A",
    63: "VA", 65: "W", 67: "var", 69: "-",
}
REFERENCE_F64_UNITS = {801: "Wh", 805: "Wh", 809: "Wh", 813: "Wh",
                       817: "varh", 821: "varh", 825: "varh", 829: "varh", 833: "VAh", 837: "VAh"}
# The seed writes reactive units as VAr/VArh and a dimensionless power factor as "na".
SEED_SPELLING = {"var": "VAr", "varh": "VArh", "-": "na"}

# The seed README's default params: id -> (unit, acronym).
SEED_PARAMS = {
    "104": ("V", "UL1_L2"),
    "107": ("A", "IL1"),
    "132": ("VA", "S_TOT"),
    "133": ("W", "P_TOT"),
    "134": ("VAr", "Q_TOT"),
    "135": ("na", "PF_TOT"),
    "222": ("Wh", "EnP_Imp_Tar1"),
    "226": ("VArh", "EnQ_Imp_Tar1"),
}


@pytest.fixture(scope="module")
def pac3200():
    return load_profile("pac3200")


def test_pac3200_is_a_builtin_profile() -> None:
    assert "pac3200" in builtin_names()


def test_pac3200_float32_block_follows_id_rule_of_reference(pac3200) -> None:
    params = {p.address: p for p in pac3200.params if p.type == "float32"}

    assert sorted(params) == sorted(REFERENCE_F32_UNITS)
    for offset, param in params.items():
        assert param.id == str(100 + (offset + 1) // 2), offset
    assert [params[o].id for o in (1, 69)] == ["101", "135"]


def test_pac3200_float64_counters_follow_id_rule_of_reference(pac3200) -> None:
    params = {p.address: p for p in pac3200.params if p.type == "float64"}

    assert sorted(params) == sorted(REFERENCE_F64_UNITS)
    for offset, param in params.items():
        assert param.id == str(222 + (offset - 801) // 4), offset
    assert [params[o].id for o in (801, 837)] == ["222", "231"]


def test_pac3200_has_nothing_but_the_reference_quantities(pac3200) -> None:
    assert len(pac3200.params) == len(REFERENCE_F32_UNITS) + len(REFERENCE_F64_UNITS) == 45


def test_pac3200_units_match_reference_in_seed_spelling(pac3200) -> None:
    reference = REFERENCE_F32_UNITS | REFERENCE_F64_UNITS

    for param in pac3200.params:
        expected = SEED_SPELLING.get(reference[param.address], reference[param.address])
        assert param.unit == expected, param.id


def test_pac3200_wire_format_is_big_endian_high_word_first_fc3(pac3200) -> None:
    assert (pac3200.function, pac3200.byte_order, pac3200.word_order, pac3200.address_base) == (3, "big", "big", 0)
    assert all(pac3200.orders_of(p) == ("big", "big") for p in pac3200.params)


@pytest.mark.parametrize(("param_id", "unit", "acronym"), [(k, *v) for k, v in SEED_PARAMS.items()])
def test_pac3200_seed_params_have_seed_unit_and_acronym(pac3200, param_id, unit, acronym) -> None:
    param = pac3200.by_id[param_id]

    assert (param.unit, param.acronym) == (unit, acronym)
    assert param.descr_ita and param.descr_eng


def test_pac3200_default_params_are_the_seed_set(pac3200) -> None:
    assert pac3200.default_ids == list(SEED_PARAMS)


# --- bad user profiles ---------------------------------------------------------------

GOOD_PARAMS = "  - {id: 1, address: 0, type: float32}\n  - {id: 2, address: 2, type: uint16}\n"
HEADER = "name: mymeter\n"

BAD_PROFILES = [
    pytest.param(
        HEADER + "params:\n  - {id: 1, address: 0, type: float16}\n",
        ["params.0.type", "unknown type 'float16'"],
        id="unknown-type",
    ),
    pytest.param(
        HEADER + "params:\n" + GOOD_PARAMS + "  - {id: 1, address: 10, type: uint16}\n",
        ["params[2]", "duplicate param id '1'"],
        id="duplicate-id",
    ),
    pytest.param(
        HEADER + "default_params: [1, 7]\nparams:\n" + GOOD_PARAMS,
        ["default_params", "'7' is not a param"],
        id="default-param-missing",
    ),
    pytest.param(
        HEADER + "params:\n  - {id: 9, address: 65535, type: float32}\n",
        ["params[0] (id '9')", "65535 + 2 words exceeds 65535"],
        id="address-plus-words-beyond-65535",
    ),
    pytest.param(
        HEADER + "params:\n  - {id: 9, address: 65533, type: float64}\n",
        ["params[0] (id '9')", "65533 + 4 words exceeds 65535"],
        id="float64-crossing-65535",
    ),
    pytest.param(
        HEADER + "params:\n  - {id: 1, address: 0, type: float32, colour: red}\n",
        ["params.0.colour", "Extra inputs are not permitted"],
        id="unknown-param-key",
    ),
    pytest.param(
        HEADER + "colour: red\nparams:\n" + GOOD_PARAMS,
        ["colour", "Extra inputs are not permitted"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        HEADER + "params:\n  - {id: 1, address: 0, order: ABDC}\n",
        ["params.0.order", "unknown order 'ABDC'"],
        id="unknown-order-alias",
    ),
    pytest.param(HEADER + "params:\n  - {id: 1, address: 0\n", ["not valid YAML"], id="invalid-yaml"),
    pytest.param("- just\n- a list\n", ["must be a mapping"], id="not-a-mapping"),
    pytest.param(HEADER + "params: []\n", ["params"], id="no-params"),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_PROFILES)
def test_bad_user_profile_raises_profile_error_naming_file_and_field(tmp_path: Path, text, fragments) -> None:
    path = tmp_path / "mymeter.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ProfileError) as raised:
        load_profile(str(path))

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_last_register_65535_is_still_addressable(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(HEADER + "params:\n  - {id: 9, address: 65534, type: float32}\n", encoding="utf-8")

    assert load_profile(str(path)).by_id["9"].address == 65534


def test_missing_profile_file_raises_profile_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ProfileError, match="nope.yaml") as raised:
        load_profile(str(path))

    assert "not found" in str(raised.value)
    assert "pac3200" in str(raised.value)  # lists the built-in names as alternatives


def test_relative_profile_resolves_against_config_folder(tmp_path: Path) -> None:
    (tmp_path / "meters").mkdir()
    (tmp_path / "meters" / "mymeter.yaml").write_text(HEADER + "params:\n" + GOOD_PARAMS, encoding="utf-8")

    profile = load_profile("meters/mymeter.yaml", base_dir=tmp_path)

    assert (profile.name, [p.id for p in profile.params]) == ("mymeter", ["1", "2"])
