"""The board's figures: CPU temperature from /sys/class/thermal, memory and process start from /proc."""

from __future__ import annotations

import os
import subprocess

from gateway.status.host import HostSample, cpu_temperature, process_start_ticks, rss_bytes, sample


def zone(root, n: int, kind: str, temp: str) -> None:
    z = root / f"thermal_zone{n}"
    z.mkdir(parents=True)
    (z / "type").write_text(kind + "\n")
    (z / "temp").write_text(temp + "\n")


def test_cpu_temperature_prefers_the_processor_zone(tmp_path):
    zone(tmp_path, 0, "acpitz", "27800")
    zone(tmp_path, 1, "x86_pkg_temp", "52125")
    assert cpu_temperature(str(tmp_path)) == 52.1


def test_cpu_temperature_of_a_raspberry_pi_and_of_boards_without_one(tmp_path):
    zone(tmp_path / "pi", 0, "cpu-thermal", "48312")
    assert cpu_temperature(str(tmp_path / "pi")) == 48.3
    zone(tmp_path / "other", 0, "battery", "31000")
    assert cpu_temperature(str(tmp_path / "other")) == 31.0  # no CPU zone: the first one that reads
    zone(tmp_path / "asleep", 0, "cpu-thermal", "")  # a sensor that refuses reads
    assert cpu_temperature(str(tmp_path / "asleep")) is None
    assert cpu_temperature(str(tmp_path / "none")) is None


def test_sample_reads_disk_memory_and_leaves_out_what_the_board_lacks(tmp_path):
    s = sample(str(tmp_path), thermal_root=str(tmp_path / "no-thermal"))
    assert s.disk_free_bytes and s.disk_total_bytes and s.disk_free_bytes <= s.disk_total_bytes
    assert s.rss_bytes and 1 << 20 < s.rss_bytes < 1 << 34 and rss_bytes() > 0
    assert "cpu_temp_c" not in s.as_dict() and set(s.as_dict()) == {"disk_free_bytes", "disk_total_bytes", "rss_bytes"}
    assert HostSample().as_dict() == {}


def test_process_start_ticks_names_one_process():
    mine = process_start_ticks(os.getpid())
    assert isinstance(mine, int) and mine == process_start_ticks(os.getpid())
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert process_start_ticks(child.pid) >= mine
    finally:
        child.kill()
        child.wait()
    assert process_start_ticks(child.pid) is None  # reaped: gone
