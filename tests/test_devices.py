"""The device and system tables, their links, and custom devices / systems from JSON and YAML files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_profiler.errors import ProfilerError, QueryError
from llm_profiler.hardware import (
    DEVICES,
    SYSTEMS,
    DeviceFileError,
    get_device,
    get_system,
    list_devices,
    list_systems,
)
from llm_profiler.hardware import devices as devices_mod
from llm_profiler.hardware import systems as systems_mod

GiB = 2**30
ROOT = Path(__file__).resolve().parents[1]

REQUIRED = {
    "H100-SXM", "H100-PCIe", "H100-NVL", "H200", "H20", "B200", "B300", "GB200", "A100-40GB", "A100-80GB",
    "L40S", "L4", "A10", "RTX-4090", "RTX-5090", "MI250X", "MI300X", "MI325X", "MI355X", "Gaudi2", "Gaudi3",
    "TPU-v5e", "TPU-v5p", "TPU-v6e", "TPU-v7", "M2-Ultra", "M3-Max", "M4-Max",
    "RTX-3090",  # existed before the table grew: its name must keep working
}


# ---------------------------------------------------------------- the device table


def test_table_has_the_required_devices() -> None:
    assert len(DEVICES) >= 30
    assert REQUIRED <= set(list_devices())


@pytest.mark.parametrize("name", list(DEVICES))
def test_every_entry_is_sourced_and_positive(name: str) -> None:
    dev = DEVICES[name]
    assert dev.name == name and dev.vendor
    assert dev.source.strip() and ("http" in dev.source or "datasheet" in dev.source.lower())
    assert dev.memory_bytes > 0 and dev.memory_bandwidth > 0
    assert dev.peak_flops and all(v > 0 and math.isfinite(v) for v in dev.peak_flops.values())
    # every entry says how it talks to its peers, per direction, with the source of the figure
    assert dev.interconnect is not None
    for link in (dev.interconnect, dev.host_link):
        if link is not None:
            assert link.kind and link.source and link.bandwidth > 0
            assert link.latency_s is None or 0 < link.latency_s < 1e-4
            # the latency figure names its source or says it is an assumption / unknown
            assert "latency" in link.source


def test_names_and_aliases_are_unique() -> None:
    canonical = [devices_mod._key(n) for n in DEVICES]
    assert len(canonical) == len(set(canonical))  # no two table names collapse to one key
    for alias, target in devices_mod._ALIASES.items():
        assert target in DEVICES, alias
        # an alias never shadows another device's own name
        assert alias not in canonical or DEVICES[target] is DEVICES[list(DEVICES)[canonical.index(alias)]]
        assert get_device(alias).name == target
    # systems and devices never share a key, so a name means one thing
    system_keys = [systems_mod.system_key(n) for n in SYSTEMS] + list(systems_mod._ALIASES)
    assert len(system_keys) == len(set(system_keys))
    assert not set(system_keys) & set(devices_mod._LOOKUP)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("H100 NVL", "H100-NVL"),
        ("h20", "H20"),
        ("NVIDIA B200", "B200"),
        ("GB200", "GB200"),
        ("a100-pcie", "A100-80GB-PCIe"),
        ("NVIDIA A10", "A10"),
        ("GeForce RTX 5090", "RTX-5090"),
        ("AMD Instinct MI250X", "MI250X"),
        ("mi325x", "MI325X"),
        ("Intel Gaudi 3", "Gaudi3"),
        ("Habana Gaudi2", "Gaudi2"),
        ("v5e", "TPU-v5e"),
        ("Cloud TPU v5p", "TPU-v5p"),
        ("Trillium", "TPU-v6e"),
        ("TPU7x", "TPU-v7"),
        ("ironwood", "TPU-v7"),
        ("Apple M2 Ultra", "M2-Ultra"),
        ("m4 max", "M4-Max"),
    ],
)
def test_new_aliases(alias: str, name: str) -> None:
    assert get_device(alias).name == name


def test_new_datasheet_figures() -> None:
    # H100 SXM: "NVLink 900 GB/s" and "PCIe Gen5 128 GB/s" are bidirectional: 450 and 64 GB/s per direction
    h100 = get_device("H100-SXM")
    assert h100.interconnect is not None and h100.interconnect.bandwidth == 450e9
    assert h100.host_link is not None and h100.host_link.bandwidth == 64e9
    assert h100.interconnect.latency_s == pytest.approx(0.47e-6)  # NCCL's per-hop NVLink figure
    # HGX B200 prints 36 PFLOPS bf16 for 8 GPUs with sparsity: 36e15 / 8 / 2 = 2.25e15 dense per GPU
    assert get_device("B200").peak("bf16") == 36e15 / 8 / 2
    # GB200 NVL72: 360 PFLOPS bf16 sparse / 72 / 2 = 2.5e15; 13.4 TB / 72 = 186 GB per GPU
    assert get_device("GB200").peak("bf16") == pytest.approx(360e15 / 72 / 2)
    assert get_device("GB200").memory_bytes == 186 * GiB
    # MI300X: 7 Infinity Fabric links x 128 GB/s bidirectional = 896 GB/s -> 448 GB/s per direction
    mi300x = get_device("MI300X").interconnect
    assert mi300x is not None and mi300x.bandwidth == 7 * 128e9 / 2
    # MI355X: 256 CUs x 8,192 fp8 FLOP per CU per clock x 2.4 GHz = 5,033.2 TFLOPS
    assert get_device("MI355X").peak("fp8") == pytest.approx(256 * 8192 * 2.4e9, rel=1e-5)
    # Gaudi 3: 21 scale-up ports x 200 Gb/s / 8 = 525 GB/s per direction
    gaudi3 = get_device("Gaudi3").interconnect
    assert gaudi3 is not None and gaudi3.bandwidth == 21 * 200e9 / 8
    # TPU v5e: 197 TFLOPS bf16, 819 GB/s, 16 GiB; ICI 400 GB/s bidirectional -> 200 GB/s per direction
    v5e = get_device("TPU-v5e")
    assert (v5e.peak("bf16"), v5e.memory_bandwidth, v5e.memory_bytes) == (197e12, 819e9, 16 * GiB)
    assert v5e.interconnect is not None and v5e.interconnect.bandwidth == 200e9
    with pytest.raises(QueryError, match="no peak FLOP/s for 'fp32'"):
        v5e.peak("fp32")  # no published fp32 MXU figure: no key rather than a guess
    # M2 Ultra: 76 cores x 128 ALUs x 2 FLOP x 1.398 GHz = 27.2 TFLOPS
    assert get_device("M2-Ultra").peak("fp32") == pytest.approx(76 * 128 * 2 * 1.398e9, rel=1e-3)


def test_unknown_device_mentions_files_and_systems() -> None:
    with pytest.raises(QueryError, match=r"\.json / \.yaml device file"):
        get_device("tpu-v9")
    with pytest.raises(QueryError, match=r"get_system\('dgx-h100'\)"):
        get_device("dgx-h100")


# ---------------------------------------------------------------- systems


def test_system_table() -> None:
    assert {"dgx-h100", "dgx-h200", "dgx-b200", "gb200-nvl72", "hgx-a100-8", "mi300x-8", "tpu-v5e-8"} <= set(
        list_systems()
    )
    for s in SYSTEMS.values():
        assert s.device.name in DEVICES and s.device_count > 0
        assert s.source and s.intra_node.bandwidth > 0 and s.intra_node.source
        assert "latency" in s.intra_node.source
        if s.inter_node is not None:
            assert s.inter_node.links > 0 and s.inter_node.link_bandwidth > 0 and s.inter_node.source
            assert "latency" in s.inter_node.source


def test_dgx_h100_by_hand() -> None:
    dgx = get_system("DGX H100")
    assert dgx.name == "dgx-h100" and dgx.device is DEVICES["H100-SXM"] and dgx.device_count == 8
    assert dgx.intra_node.bandwidth == 450e9  # NVLink 4, per GPU per direction
    assert dgx.memory_bytes == 8 * 80 * GiB  # 640 GiB
    assert dgx.peak("bf16") == 8 * 989.5e12
    assert dgx.memory_bandwidth == 8 * 3.35e12
    # 8x 400 Gb/s InfiniBand NDR: 8 * 400e9 / 8 = 400e9 bytes/s per node per direction, 50e9 per GPU
    assert dgx.inter_node is not None
    assert dgx.inter_node.link_bandwidth == 50e9 and dgx.inter_node.bandwidth == 400e9
    assert dgx.inter_node_bandwidth_per_device == 50e9
    assert dgx.inter_node.latency_s == pytest.approx(2.7e-6)
    # GB200 NVL72: 72 GPUs of 186 GiB; NVLink 5 at 900 GB/s per direction
    nvl72 = get_system("nvl72")
    assert nvl72.device_count == 72 and nvl72.memory_bytes == 72 * 186 * GiB
    assert nvl72.intra_node.bandwidth == 900e9 and nvl72.inter_node_bandwidth_per_device is None
    # v5e host: 2 x 100 Gbps NICs = 25e9 bytes/s per host, 3.125e9 per chip
    assert get_system("tpu-v5e-8").inter_node_bandwidth_per_device == 2 * 100e9 / 8 / 8


def test_unknown_system() -> None:
    with pytest.raises(QueryError, match="valid systems: dgx-h100"):
        get_system("dgx-z900")


# ---------------------------------------------------------------- custom devices from files

DEVICE = {
    "name": "my-gpu",
    "vendor": "acme",
    "memory_gb": 48,
    "bandwidth_gbps": 960,
    "tflops": {"bfloat16": 200, "fp32": 50},
    "interconnect": {"kind": "MyLink", "bandwidth_gbps": 300, "latency_us": 0.8},
    "source": "acme datasheet rev 2, table 1",
}
DEVICE_YAML = """\
name: my-gpu
vendor: acme
memory_gb: 48
bandwidth_gbps: 960
tflops:
  bfloat16: 200
  fp32: 50
interconnect: {kind: MyLink, bandwidth_gbps: 300, latency_us: 0.8}
source: acme datasheet rev 2, table 1
"""


def _check_my_gpu(dev: object) -> None:
    from llm_profiler.hardware import DeviceSpec

    assert isinstance(dev, DeviceSpec)
    assert dev.name == "my-gpu" and dev.vendor == "acme"
    assert dev.memory_bytes == 48 * GiB  # 51,539,607,552: GB as printed, read as GiB like the table
    assert dev.memory_bandwidth == 960e9
    assert dev.peak_flops == {"bf16": 200e12, "fp32": 50e12}
    assert dev.interconnect is not None
    assert (dev.interconnect.bandwidth, dev.interconnect.latency_s) == (300e9, pytest.approx(0.8e-6))
    assert dev.source == "acme datasheet rev 2, table 1"


def _write(tmp_path: Path, name: str, content: str | dict[str, object]) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_device_from_json_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "my-gpu.json", DEVICE)
    _check_my_gpu(get_device(path))  # a Path
    _check_my_gpu(get_device(str(path)))  # or a string


def test_device_from_yaml_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    for suffix in (".yaml", ".yml"):
        _check_my_gpu(get_device(_write(tmp_path, "my-gpu" + suffix, DEVICE_YAML)))


def test_yaml_without_pyyaml_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "my-gpu.yaml", DEVICE_YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(DeviceFileError, match=r"pip install pyyaml.*JSON files always work"):
        get_device(path)
    _check_my_gpu(get_device(_write(tmp_path, "my-gpu.json", DEVICE)))  # JSON still works


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"memory_gb": None}, "field 'memory_gb': required field is missing"),
        ({"bandwidth_gbps": -1}, "field 'bandwidth_gbps': Input should be greater than 0"),
        ({"bandwidth_gbps": "960"}, "field 'bandwidth_gbps'"),  # strict: a string is not a number
        ({"memory_gb": True}, "field 'memory_gb'"),
        ({"tflops": {"fp64": 10}}, "field 'tflops'.*valid compute dtypes: fp32, tf32"),
        ({"tflops": {"bf16": 0}}, "field 'tflops.bf16': Input should be greater than 0"),
        ({"tflops": {}}, "field 'tflops'"),
        ({"tflops": {"bf16": 1, "bfloat16": 2}}, "field 'tflops'.*'bf16' and 'bfloat16' both name"),
        ({"memory_bw": 3}, "field 'memory_bw': unknown field"),
        ({"interconnect": {"bandwidth_gbps": 300}}, "field 'interconnect.kind': required field is missing"),
        ({"name": ""}, "field 'name'"),
    ],
)
def test_malformed_device_file_names_the_field(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    data = {**DEVICE, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = _write(tmp_path, "bad.json", data)
    with pytest.raises(DeviceFileError, match=expected) as err:
        get_device(path)
    assert isinstance(err.value, QueryError) and isinstance(err.value, ProfilerError)
    assert "bad.json" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", "{not json", "is not valid JSON"),
        ("bad.json", "[1, 2]", "top level must be a mapping"),
        ("bad.yaml", "name: [unclosed", "is not valid YAML"),
        ("bad.txt", "{}", r"must end in \.json, \.yaml or \.yml"),
    ],
)
def test_unreadable_device_files(tmp_path: Path, name: str, content: str, expected: str) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    with pytest.raises(DeviceFileError, match=expected):
        get_device(_write(tmp_path, name, content))
    with pytest.raises(DeviceFileError, match="not found"):
        get_device(tmp_path / "missing.json")


# ---------------------------------------------------------------- custom systems from files


def test_system_from_json_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "node.json", {
        "name": "my-node",
        "device": "h100",
        "device_count": 4,
        "inter_node": {"kind": "RoCE", "links": 2, "link_gbit_s": 400, "latency_us": 3},
    })
    node = get_system(path)
    assert (node.name, node.device.name, node.device_count) == ("my-node", "H100-SXM", 4)
    assert node.intra_node == DEVICES["H100-SXM"].interconnect  # defaults to the device's own link
    assert node.memory_bytes == 4 * 80 * GiB
    # 2 links x 400 Gb/s / 8 = 100e9 bytes/s per node per direction, 25e9 per device
    assert node.inter_node is not None and node.inter_node.bandwidth == 100e9
    assert node.inter_node_bandwidth_per_device == 25e9
    assert node.inter_node.latency_s == pytest.approx(3e-6)


def test_system_from_yaml_file_with_device_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    _write(tmp_path, "my-gpu.json", DEVICE)
    path = _write(tmp_path, "node.yaml", "name: pair\ndevice: ./my-gpu.json\ndevice_count: 2\n"
                                          "intra_node: {kind: bridge, bandwidth_gbps: 50}\n")
    node = get_system(path)  # the device path is relative to the system file
    _check_my_gpu(node.device)
    assert node.intra_node.bandwidth == 50e9 and node.intra_node.kind == "bridge"
    assert node.peak("bf16") == 2 * 200e12
    # an inline device in the DeviceFile format works too
    inline = _write(tmp_path, "inline.json", {"name": "one", "device": DEVICE, "device_count": 1})
    _check_my_gpu(get_system(inline).device)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "x", "device": "no-such-gpu", "device_count": 8}, "field 'device': unknown device 'no-such-gpu'"),
        ({"name": "x", "device": "h100", "device_count": 0}, "field 'device_count': Input should be greater than 0"),
        ({"name": "x", "device": "h100"}, "field 'device_count': required field is missing"),
        ({"name": "x", "device": {**DEVICE, "interconnect": None}, "device_count": 2},
         "field 'intra_node': required, because device 'my-gpu' has no interconnect"),
        ({"name": "x", "device": "h100", "device_count": 8, "inter_node": {"kind": "IB", "links": 8}},
         "field 'inter_node.link_gbit_s': required field is missing"),
    ],
)
def test_malformed_system_file_names_the_field(tmp_path: Path, data: dict[str, object], expected: str) -> None:
    with pytest.raises(DeviceFileError, match=expected):
        get_system(_write(tmp_path, "bad-system.json", data))


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_cli_roofline_with_a_device_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    from llm_profiler.perf import phase_report
    from llm_profiler.phases import Phase

    path = _write(tmp_path, "my-gpu" + suffix, DEVICE if suffix == ".json" else DEVICE_YAML)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-m", "llm_profiler", "roofline", "llama-3.2-1b", "--device", str(path), "--json"],
        capture_output=True, text=True, check=True, env=env, cwd=tmp_path,
    )
    report = json.loads(out.stdout)
    assert report["device"] == "my-gpu" and report["compute_dtype"] == "bf16"
    # the file's figures drive the roofline: bf16 200 TFLOPS, 960 GB/s
    flops, moved, latency = report["flops"]["total"], report["io"]["total"], report["latency_s"]
    assert report["flops"]["theoretical_latency_s"] == pytest.approx(flops / 200e12, rel=1e-12)
    assert report["io"]["theoretical_latency_s"] == pytest.approx(moved / 960e9, rel=1e-12)
    assert report["mfu"] == pytest.approx(flops / latency / 200e12, rel=1e-12)
    assert report["mbu"] == pytest.approx(moved / latency / 960e9, rel=1e-12)
    # and the CLI agrees with the API on the same device (prefill, batch 1, 2048 tokens, engine vllm with
    # logits on the last position: the CLI defaults)
    api = phase_report("llama-3.2-1b", Phase.prefill(1, 2048, 0, "last"), get_device(path), engine="vllm")
    assert (flops, moved) == (api.flops.total, api.io.total)
    assert latency == pytest.approx(api.latency_s, rel=1e-12)


def test_cli_reports_a_malformed_device_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.json", {**DEVICE, "bandwidth_gbps": 0})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-m", "llm_profiler", "roofline", "llama-3.2-1b", "--device", str(path)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "field 'bandwidth_gbps'" in out.stderr and "Traceback" not in out.stderr
