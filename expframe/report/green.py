"""The report's energy notes: how its energy figures were obtained, and what early stopping saved."""

PATIENCE = "early_stopping.patience"


def energy_footnote(df) -> str:
    """Every table with energy figures says whether they were metered or estimated, and the grid
    intensity that turned them into CO2eq."""
    measured = df[df["energy_kwh"].notna()]
    if measured.empty:
        return ""
    methods = sorted(set(measured["energy_method"].dropna()))
    intensities = sorted({round(v, 3) for v in measured["carbon_intensity_g_per_kwh"].dropna()})
    how = {
        "estimated": "estimated by CodeCarbon's model (CPU load x TDP, RAM from its size), not metered",
        "metered": "metered (the CPU's RAPL counter, NVML on a GPU; RAM from its size)",
    }
    text = "energy: " + "; ".join(f"{how[m]} ({(measured['energy_method'] == m).sum()} runs)" for m in methods)
    if "energy_attribution" in measured and (measured["energy_attribution"] == "cpu_time").any():
        text += "; attributed to each run's own work (its CPU seconds x one core's power, RAM for the time it computed)"
    grids = ", ".join(f"{v:g}" for v in intensities)
    scope = "training and evaluation phases only, not start-up"
    return f"{text}; {scope}; CO2eq at {grids} gCO2eq/kWh (docs/energy.md)."


def early_stopping_savings(df, keys: list[str]) -> str:
    """Each configuration with early stopping beside the same configuration without it (every other
    key equal): epochs run, energy and test accuracy, means over their ok runs."""
    if PATIENCE not in keys:
        return ""
    others = [k for k in keys if k != PATIENCE]
    ok = df[df["status"] == "ok"].assign(**{k: df[k].astype(str) for k in keys})
    means = {}
    for values, runs in ok.groupby(keys):
        config = dict(zip(keys, values, strict=True))
        means[tuple(config[k] for k in others), config[PATIENCE]] = {
            **runs[["epochs_run", "energy_kwh", "test_acc"]].mean().to_dict(),
            "n": len(runs),
            "left_out": int(runs["energy_unreliable"].sum()) if "energy_unreliable" in runs else 0,
        }
    lines = []
    for (rest, patience), on in means.items():
        off = means.get((rest, "null"))
        if patience == "null" or off is None:
            continue
        saved = 1 - on["energy_kwh"] / off["energy_kwh"] if on["energy_kwh"] == on["energy_kwh"] else None
        cells = [
            *rest,
            patience,
            f"{off['epochs_run']:.1f} → {on['epochs_run']:.1f}",
            f"{_kwh(off['energy_kwh'])} → {_kwh(on['energy_kwh'])}",
            _saved(saved, off["left_out"] + on["left_out"]),
            f"{off['test_acc']:.4f} → {on['test_acc']:.4f} ({on['test_acc'] - off['test_acc']:+.4f})",
            f"{off['n']} / {on['n']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = [*others, "patience", "epochs run", "energy (kWh)", "energy saved", "test_acc", "n"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines]
    return (
        "Early stopping against the same configuration without it (without → with, means over ok runs):\n\n"
        + "\n".join(table)
    )


def _saved(saved: float | None, left_out: int) -> str:
    """The saving, or why there is none: energy left out as unreliable (docs/shared-machines.md)."""
    if saved is None or saved != saved:
        return f"– ({left_out} run(s) left out as unreliable)" if left_out else "–"
    return f"{saved:.0%}" + (f" ({left_out} run(s) left out as unreliable)" if left_out else "")


def _kwh(value: float) -> str:
    return "–" if value != value else f"{value:.3g}"
