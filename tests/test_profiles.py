"""Device profiles: the built-in PAC3200 map against the reference sheet, and bad user files."""

from __future__ import annotations

from pathlib import Path

import pytest

import susee.profiles as profiles_package
from susee.codec import DATA_TYPES, ORDER_ALIASES, registers_to_bytes
from susee.planner import plan_reads
from susee.profiles import Profile, ProfileError, builtin_names, load_profile

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

def _params(*lines: str) -> str:
    return HEADER + "params:\n" + "".join(f"  - {line}\n" for line in lines)


BAD_PROFILES = [
    pytest.param(
        _params("{id: 1, address: 0, type: float16}"),
        ["params[0] (id '1'): field 'type': unknown type 'float16'; expected one of uint16, int16"],
        id="unknown-type",
    ),
    pytest.param(
        _params("{id: 101, address: 0}", "{id: 102, address: 2}", "{id: 103, address: 4}",
                "{id: 104, address: 6, type: float33}"),
        ["params[3] (id '104'): field 'type': unknown type 'float33'; expected one of"],
        id="unknown-type-names-index-and-id",
    ),
    pytest.param(
        HEADER + "params:\n" + GOOD_PARAMS + "  - {id: 1, address: 10, type: uint16}\n",
        ["params[2] (id '1'): field 'id': duplicate of params[0]"],
        id="duplicate-id",
    ),
    pytest.param(
        HEADER + "default_params: [1, 7]\nparams:\n" + GOOD_PARAMS,
        ["default_params", "'7' is not a param"],
        id="default-param-missing",
    ),
    pytest.param(
        _params("{id: 9, address: 65535, type: float32}"),
        ["params[0] (id '9'): field 'address': register 65535 + 2 words exceeds 65535"],
        id="address-plus-words-beyond-65535",
    ),
    pytest.param(
        _params("{id: 9, address: 65533, type: float64}"),
        ["params[0] (id '9')", "65533 + 4 words exceeds 65535"],
        id="float64-crossing-65535",
    ),
    pytest.param(
        "name: m\naddress_base: 1\nparams:\n  - {id: z, address: 0}\n",
        ["params[0] (id 'z'): field 'address': register 0 is below address_base 1"],
        id="register-0-with-1-based-numbering",
    ),
    pytest.param(
        _params("{id: 1, address: 0, type: float32, colour: red}"),
        ["params[0] (id '1'): field 'colour': unknown key"],
        id="unknown-param-key",
    ),
    pytest.param(
        HEADER + "colour: red\nparams:\n" + GOOD_PARAMS,
        ["field 'colour': unknown key"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        _params("{id: 1, address: 0, order: ABDC}"),
        ["params[0] (id '1'): field 'order': unknown order 'ABDC'; expected one of ABCD, CDAB, BADC, DCBA"],
        id="unknown-order-alias",
    ),
    pytest.param(
        _params("{id: 1, address: 0, byte_order: middle}"),
        ["params[0] (id '1'): field 'byte_order'", "'big' or 'little'"],
        id="unknown-byte-order",
    ),
    pytest.param(
        _params("{id: 1, address: 0, function: 5}"),
        ["params[0] (id '1'): field 'function'"],
        id="write-or-unknown-function-code",
    ),
    pytest.param(
        _params("{id: 1, address: 0, type: float32, bits: '3'}"),
        ["params[0] (id '1'): field 'bits': bits need an integer type"],
        id="bits-of-a-float",
    ),
    pytest.param(
        _params("{id: 1, address: 0, type: uint16, bits: '12-16'}"),
        ["params[0] (id '1'): field 'bits': bits '12-16': uint16 has bits 0-15"],
        id="bits-beyond-the-type",
    ),
    pytest.param(
        _params("{id: 1, address: 0, type: uint16, bits: 'low'}"),
        ["params[0] (id '1'): field 'bits'", "must look like"],
        id="bits-malformed",
    ),
    pytest.param(
        _params("{id: c, address: 0, type: bit}"),
        ["params[0] (id 'c'): field 'function': type bit is read with function 1 (coils) or 2"],
        id="bit-type-read-as-register",
    ),
    pytest.param(
        _params("{id: c, address: 0, function: 1, type: uint16}"),
        ["params[0] (id 'c'): field 'type': function 1 reads bits; use type bit"],
        id="coil-with-a-register-type",
    ),
    pytest.param(
        _params("{id: c, address: 0, function: 2, scale_register: {address: 5}}"),
        ["params[0] (id 'c')", "bits and scale_register do not apply"],
        id="bit-with-scale-register",
    ),
    pytest.param(
        _params("{id: p, address: 0, type: int16, scale_register: {address: 5, type: float32}}"),
        ["params[0] (id 'p'): field 'scale_register.type': unknown exponent type 'float32'"],
        id="scale-register-of-a-float-type",
    ),
    pytest.param(
        _params("{id: p, address: 0, type: int16, scale_register: {address: 5, colour: red}}"),
        ["params[0] (id 'p'): field 'scale_register.colour': unknown key"],
        id="scale-register-unknown-key",
    ),
    pytest.param(
        _params("{id: p, address: 0, type: int16, scale_register: {address: 70000}}"),
        ["params[0] (id 'p'): field 'scale_register.address'"],
        id="scale-register-address-beyond-65535",
    ),
    pytest.param(
        HEADER + "max_bits: 2001\nparams:\n" + GOOD_PARAMS,
        ["field 'max_bits'"],
        id="more-than-2000-bits",
    ),
    pytest.param(HEADER + "params:\n  - {id: 1, address: 0\n", ["not valid YAML"], id="invalid-yaml"),
    pytest.param("- just\n- a list\n", ["must be a mapping"], id="not-a-mapping"),
    pytest.param(HEADER + "params: []\n", ["field 'params'"], id="no-params"),
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


# --- order aliases in a profile ------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ("big", "big")),
        ({"order": "ABCD"}, ("big", "big")),
        ({"order": "CDAB"}, ("big", "little")),
        ({"order": "BADC"}, ("little", "big")),
        ({"order": "DCBA"}, ("little", "little")),
        ({"order": "cdab"}, ("big", "little")),
        ({"order": "Badc"}, ("little", "big")),
        ({"byte_order": "little"}, ("little", "big")),
        ({"word_order": "little"}, ("big", "little")),
        ({"byte_order": "little", "word_order": "little"}, ("little", "little")),
        ({"order": "ABCD", "byte_order": "little"}, ("big", "big")),  # the alias wins
    ],
)
def test_param_order_by_alias_or_by_name(keys, expected) -> None:
    profile = Profile.model_validate({"name": "m", "params": [{"id": "x", "address": 0, **keys}]})

    assert profile.orders_of(profile.by_id["x"]) == expected


def test_profile_default_order_applies_to_params_without_their_own() -> None:
    profile = Profile.model_validate(
        {"name": "m", "byte_order": "little", "word_order": "little", "params": [{"id": "x", "address": 0}]}
    )

    assert profile.orders_of(profile.by_id["x"]) == ("little", "little")


def test_a_coil_defaults_to_type_bit_and_ignores_the_profile_order() -> None:
    profile = Profile.model_validate(
        {"name": "m", "byte_order": "little", "params": [{"id": "c", "address": 7, "function": 1}]}
    )
    coil = profile.by_id["c"]

    assert (coil.type, profile.function_of(coil), profile.orders_of(coil)) == ("bit", 1, ("big", "big"))


# --- shipped profiles ----------------------------------------------------------------

SHIPPED = ["generic", "pac3200", "sdm630", "umg604"]
PROFILE_DIR = Path(profiles_package.__file__).parent


def test_shipped_profiles_are_the_builtin_names() -> None:
    assert builtin_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_cites_its_source_in_the_file_and_the_source_key(name) -> None:
    text = (PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    header = text.split("\nname:", 1)[0]

    assert header.startswith("# ")
    assert load_profile(name).source
    if name != "generic":
        assert "Source:" in header and ("ross-check" in header)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_params_are_described_for_the_params_table(name) -> None:
    for param in load_profile(name).params:
        assert param.unit and param.acronym and param.descr_ita and param.descr_eng, param.id


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_plans_its_default_set_and_every_param_within_its_limits(name) -> None:
    profile = load_profile(name)

    for ids in (profile.default_ids, [p.id for p in profile.params]):
        blocks = plan_reads(profile, ids)
        assert sorted(pid for b in blocks for pid in b.visible_ids) == sorted(ids)
        for block in blocks:
            limit = profile.max_bits if block.function in (1, 2) else profile.max_registers
            assert block.count <= limit, (name, block.address, block.count)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "pac3200"])
def test_ids_shared_with_pac3200_keep_its_unit(name) -> None:
    # see<job>Params has one row per idParam: one id, one unit, whichever meter wrote it.
    pac3200 = load_profile("pac3200").by_id
    shared = [p for p in load_profile(name).params if p.id in pac3200]

    for param in shared:
        assert param.unit == pac3200[param.id].unit, (name, param.id)
    assert name == "generic" or len(shared) > 20


@pytest.mark.parametrize("name", ["sdm630", "umg604"])
def test_real_meter_default_set_is_the_seed_set_in_spirit(name) -> None:
    profile = load_profile(name)
    acronyms = {profile.by_id[pid].acronym for pid in profile.default_ids}

    assert {"UL1_L2", "IL1", "S_TOT", "P_TOT", "Q_TOT"} <= acronyms
    assert {"222", "226"} <= set(profile.default_ids)  # imported active and reactive energy


# Eastron SDM630-Modbus manual, 1.2.1 input registers, transcribed:
# PDU address -> (param id, unit). Energies are kWh/kvarh on the wire, scaled to Wh/VArh.
SDM630_REFERENCE = {
    0x0000: ("101", "V"), 0x0002: ("102", "V"), 0x0004: ("103", "V"),
    0x0006: ("107", "A"), 0x0008: ("108", "A"), 0x000A: ("109", "A"),
    0x000C: ("113", "W"), 0x000E: ("114", "W"), 0x0010: ("115", "W"),
    0x0012: ("110", "VA"), 0x0014: ("111", "VA"), 0x0016: ("112", "VA"),
    0x0018: ("116", "VAr"), 0x001A: ("117", "VAr"), 0x001C: ("118", "VAr"),
    0x001E: ("119", "na"), 0x0020: ("120", "na"), 0x0022: ("121", "na"),
    0x002A: ("129", "V"), 0x002E: ("131", "A"), 0x0030: ("I_SUM", "A"),
    0x0034: ("133", "W"), 0x0038: ("132", "VA"), 0x003C: ("134", "VAr"), 0x003E: ("135", "na"),
    0x0046: ("128", "Hz"),
    0x0048: ("222", "Wh"), 0x004A: ("224", "Wh"), 0x004C: ("226", "VArh"), 0x004E: ("228", "VArh"),
    0x00C8: ("104", "V"), 0x00CA: ("105", "V"), 0x00CC: ("106", "V"), 0x00CE: ("130", "V"),
    0x0156: ("EnP_Tot", "Wh"),
}
SDM630_KWH = {"222", "224", "226", "228", "EnP_Tot"}


def test_sdm630_matches_the_manuals_input_register_table() -> None:
    profile = load_profile("sdm630")

    assert {p.address: (p.id, p.unit) for p in profile.params} == SDM630_REFERENCE
    assert (profile.function, profile.byte_order, profile.word_order, profile.address_base) == (4, "big", "big", 0)
    assert profile.max_registers == 80  # the manual: 40 values per request
    assert all(p.type == "float32" and profile.orders_of(p) == ("big", "big") for p in profile.params)
    assert {p.id for p in profile.params if p.scale == 1000} == SDM630_KWH


def test_sdm630_decodes_the_manuals_worked_example_and_scales_kwh_to_wh() -> None:
    profile = load_profile("sdm630")
    (volts,) = plan_reads(profile, ["101"])
    (energy,) = plan_reads(profile, ["222"])

    assert volts.fields[0].decode(registers_to_bytes([0x4366, 0x3334]))[0] == pytest.approx(230.2, abs=1e-4)
    assert energy.fields[0].decode(registers_to_bytes([0x4640, 0xE400]))[0] == 12345000.0  # 12345 kWh


# Janitza frequently required readings, transcribed: address -> (param id, unit).
UMG604_REFERENCE = {
    19000: ("101", "V"), 19002: ("102", "V"), 19004: ("103", "V"),
    19006: ("104", "V"), 19008: ("105", "V"), 19010: ("106", "V"),
    19012: ("107", "A"), 19014: ("108", "A"), 19016: ("109", "A"), 19018: ("I_N", "A"),
    19020: ("113", "W"), 19022: ("114", "W"), 19024: ("115", "W"), 19026: ("133", "W"),
    19028: ("110", "VA"), 19030: ("111", "VA"), 19032: ("112", "VA"), 19034: ("132", "VA"),
    19036: ("116", "VAr"), 19038: ("117", "VAr"), 19040: ("118", "VAr"), 19042: ("134", "VAr"),
    19044: ("COSPHI_L1", "na"), 19046: ("COSPHI_L2", "na"), 19048: ("COSPHI_L3", "na"),
    19050: ("128", "Hz"), 19052: ("ROT_FIELD", "na"),
    19060: ("EnP_Tot", "Wh"), 19068: ("222", "Wh"), 19076: ("224", "Wh"),
    19084: ("EnS_Tot", "VAh"), 19092: ("EnQ_Tot", "VArh"), 19100: ("226", "VArh"), 19108: ("228", "VArh"),
}


def test_umg604_matches_the_janitza_address_list() -> None:
    profile = load_profile("umg604")

    assert {p.address: (p.id, p.unit) for p in profile.params} == UMG604_REFERENCE
    assert (profile.function, profile.byte_order, profile.word_order, profile.address_base) == (3, "big", "big", 0)
    assert all(p.type == "float32" and p.scale == 1.0 and p.offset == 0.0 for p in profile.params)


def test_umg604_default_set_is_one_request_over_the_gapless_table() -> None:
    profile = load_profile("umg604")

    assert [(b.function, b.address, b.count) for b in plan_reads(profile, profile.default_ids)] == [(3, 19006, 96)]


def test_generic_profile_shows_every_feature() -> None:
    profile = load_profile("generic")
    params = profile.params

    assert {p.type for p in params} == set(DATA_TYPES)
    assert {profile.orders_of(p) for p in params if p.type != "bit"} == set(ORDER_ALIASES.values())
    assert {p.order.upper() for p in params if p.order} == {"CDAB", "BADC", "DCBA"}
    assert any(p.byte_order or p.word_order for p in params)
    assert {profile.function_of(p) for p in params} == {1, 2, 3, 4}
    assert {str(p.bits) for p in params if p.bits is not None} == {"3", "4-7"}
    assert any(p.scale_register is not None for p in params)
    assert any(p.scale != 1.0 for p in params) and any(p.offset for p in params)
    assert profile.address_base == 1
