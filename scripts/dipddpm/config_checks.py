"""Cross-reference checks of a configuration: what a JSON schema cannot express.

Names that point nowhere (with a "did you mean"), networks too deep for the images they are
fitted to, SR factors that do not divide them, snapshots past the last iteration, sampling
starts beyond what a truncated model was trained for, a guided DIP whose DDPM is used at a
step it never trained on, two values that name one grid cell. Each check takes the whole
config and returns messages that name the key and the value; :mod:`dipddpm.config` runs
them all and reports every problem at once.
"""

from __future__ import annotations

import difflib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator

from .grid import GUIDED, RESULTS, canonical

# Every CIFAR-10 image is 32x32; other sources are only known once loaded, unless resized.
CIFAR10_SIDE = 32
# data.build_dataset crops to this multiple when a dataset does not set its own.
DEFAULT_MULTIPLE = 32
DEFAULT_PRIOR_ARCH = "skip"
DEFAULT_REFERENCE = "cifar10-test"


# ----------------------------------------------------------------------------- names


def _missing(kind: str, key: str, names: Iterable[str], defined: Collection[str]) -> list[str]:
    return [
        f"'{key}' names {kind} {name!r}, which is not defined{_did_you_mean(name, defined)}; "
        f"defined: {', '.join(defined)}"
        for name in names
        if name not in defined
    ]


def _did_you_mean(name: str, defined: Collection[str]) -> str:
    close = difflib.get_close_matches(str(name), list(defined), n=3)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _dip_errors(config: dict) -> list[str]:
    datasets, tasks, dip = config["data"]["datasets"], config["tasks"], config["dip"]
    errors = []
    for i, cell in enumerate(dip["grid"]):
        errors += _missing("dataset", f"dip.grid[{i}].datasets", cell["datasets"], datasets)
        errors += _missing("task", f"dip.grid[{i}].tasks", cell["tasks"], tasks)
        errors += _missing("architecture", f"dip.grid[{i}].archs", cell["archs"], dip["archs"])
    late = [s for s in dip.get("snapshots", []) if s > dip.get("iters", 3000)]
    if late:
        errors.append(f"'dip.snapshots': {late} exceed dip.iters = {dip.get('iters')}")
    return errors


def _metrics_errors(config: dict) -> list[str]:
    # The schema's default names a dataset too, so an absent key is checked as well.
    reference = config.get("metrics", {}).get("reference", DEFAULT_REFERENCE)
    datasets = config["data"]["datasets"]
    errors = _missing("dataset", "metrics.reference", [reference], datasets)
    return errors + _classifier_errors(config.get("metrics", {}).get("classifier"), datasets)


def _classifier_errors(classifier: dict | None, datasets: dict) -> list[str]:
    """The classifier learns and is tested on labelled CIFAR-10 images, enough of them for
    its accuracy floor to mean something."""
    if not classifier:
        return []
    errors = []
    for role in ("train", "test"):
        name, key = classifier[role], f"metrics.classifier.{role}"
        errors += _missing("dataset", key, [name], datasets)
        if name in datasets and datasets[name].get("source") != "cifar10":
            errors.append(f"'{key}' {name!r} must be a CIFAR-10 dataset (the labels)")
    test = datasets.get(classifier["test"], {})
    wanted = classifier.get("min_test_images", 2000)
    if test.get("source") == "cifar10" and test.get("n", 0) < wanted:
        errors.append(
            f"'metrics.classifier.test' {classifier['test']!r} holds {test.get('n')} images; "
            f"the accuracy floor is measured on at least {wanted} (min_test_images)"
        )
    return errors


# --------------------------------------------------------------------- architectures


def _arch_errors(config: dict) -> list[str]:
    """Hyperparameters an architecture does not take (each kind has its own set), and
    per-scale channel lists that do not have one entry per scale."""
    from .dip.models import ARCH_DEFAULTS

    errors = []
    for name, spec in config["dip"]["archs"].items():
        allowed = ARCH_DEFAULTS[spec["kind"]]
        unknown = sorted(set(spec) - {"kind"} - set(allowed))
        if unknown:
            errors.append(
                f"'dip.archs.{name}': {unknown} are not parameters of a {spec['kind']!r} "
                f"network; allowed: {', '.join(sorted(allowed))}"
            )
        errors += _per_scale_errors(name, spec)
    return errors


def _per_scale_errors(name: str, spec: dict) -> list[str]:
    if spec["kind"] not in ("skip", "encdec"):
        return []
    depth = _depth(spec)
    return [
        f"'dip.archs.{name}.{field}' lists {len(spec[field])} values but "
        f"dip.archs.{name}.depth is {depth}: give one value per scale, or one integer"
        for field in ("channels_down", "channels_up")
        if isinstance(spec.get(field), list) and len(spec[field]) != depth
    ]


def _depth(spec: dict) -> int:
    from .dip.models import ARCH_DEFAULTS

    return spec.get("depth", ARCH_DEFAULTS[spec["kind"]]["depth"])


def _halvings(spec: dict) -> tuple[str, int] | None:
    """(parameter, count) of the factor-2 scale changes a network puts between its image
    and its coarsest feature map; None for the resnet, which keeps full resolution."""
    from .dip.models import ARCH_DEFAULTS

    if spec["kind"] in ("skip", "encdec"):
        return "depth", _depth(spec)
    if spec["kind"] == "convdecoder":  # grows the image from a (side / 2^layers) input
        return "layers", spec.get("layers", ARCH_DEFAULTS["convdecoder"]["layers"])
    return None


# -------------------------------------------------------------------------- datasets


def _dataset_errors(config: dict) -> list[str]:
    errors = []
    for name, spec in config["data"]["datasets"].items():
        errors += _dataset_field_errors(name, spec) + _dataset_shape_errors(name, spec)
        errors += _dataset_crop_errors(name, spec)
    return errors


def _dataset_field_errors(name: str, spec: dict) -> list[str]:
    key = f"data.datasets.{name}"
    needs = {"cifar10": ("split", "n"), "skimage": ("names",), "folder": ("path",)}
    return [
        f"'{key}.{field}' is required for source {spec['source']!r}"
        for field in needs[spec["source"]]
        if field not in spec
    ]


def _dataset_shape_errors(name: str, spec: dict) -> list[str]:
    side, multiple = _loaded_side(spec), spec.get("multiple", DEFAULT_MULTIPLE)
    if side is None or side >= multiple:
        return []
    return [
        f"'data.datasets.{name}.multiple': {multiple} exceeds the {side}x{side} images "
        f"(data.datasets.{name}.size or .crops.size, or CIFAR-10's 32); no image would be "
        "left after cropping to a multiple of it"
    ]


def _dataset_crop_errors(name: str, spec: dict) -> list[str]:
    """Crops keep natural images at their native resolution: CIFAR-10's 32x32 images have
    none to keep, a resize (``size``) would undo it, and a crop side off the ``multiple``
    would be cut again to another size than the one asked for."""
    crops, key = spec.get("crops"), f"data.datasets.{name}.crops"
    if not crops:
        return []
    errors = []
    if spec["source"] == "cifar10":
        errors.append(f"'{key}' applies to sources skimage and folder, not cifar10")
    if spec.get("size"):
        errors.append(
            f"'{key}' and 'data.datasets.{name}.size' exclude each other: size resizes whole "
            "images, crops cut them at their native resolution; drop one"
        )
    multiple = spec.get("multiple", DEFAULT_MULTIPLE)
    if crops["size"] >= multiple and crops["size"] % multiple:
        errors.append(
            f"'{key}.size': {crops['size']} is not a multiple of data.datasets.{name}.multiple "
            f"= {multiple}, so each crop would be cut again to "
            f"{crops['size'] - crops['size'] % multiple}; give a multiple of it"
        )
    return errors


def _loaded_side(spec: dict) -> int | None:
    """The side of a dataset's images before cropping to ``multiple``, where known."""
    if spec.get("crops"):
        return spec["crops"]["size"]
    if spec.get("size"):
        return spec["size"]
    return CIFAR10_SIDE if spec["source"] == "cifar10" else None


def image_side(spec: dict) -> int | None:
    """The side of the square images a dataset yields (as data.build_dataset shapes them),
    or None where only loading the images tells."""
    side, multiple = _loaded_side(spec), spec.get("multiple", DEFAULT_MULTIPLE)
    if side is None or side < multiple:
        return None
    return side - side % multiple


# ---------------------------------------------------------------------------- pairings

Pairs = dict[tuple[str, str], list[str]]


def _pair(pairs: Pairs, first: str, second: str, key: str) -> None:
    if key not in pairs[first, second]:
        pairs[first, second].append(key)


def _prior_archs(config: dict) -> list[str]:
    return _names(config["ddpm"]["sample"].get("prior_arch", DEFAULT_PRIOR_ARCH))


def _names(value) -> list[str]:
    """A config value that is one name or a list of names, as a list."""
    return list(value) if isinstance(value, list) else [value]


def arch_pairs(config: dict) -> Pairs:
    """(dataset, architecture) -> the keys that fit that architecture to that dataset."""
    pairs: Pairs = defaultdict(list)
    for i, block in enumerate(config["dip"]["grid"]):
        for dataset in block["datasets"]:
            for arch in block["archs"]:
                _pair(pairs, dataset, arch, f"dip.grid[{i}]")
    es = config.get("earlystop") or {}
    for i, block in enumerate(es.get("grid", [])):
        for dataset, arch in itertools.product(_earlystop_datasets(es), block["archs"]):
            _pair(pairs, dataset, arch, f"earlystop.grid[{i}]")
    guided = es.get("guided") or {}
    for dataset, arch in itertools.product(guided.get("datasets", []), guided.get("archs", [])):
        _pair(pairs, dataset, arch, "earlystop.guided")
    ablations = es.get("ablations") or {}
    if ablations:
        named = [ablations["centre"]["arch"], *ablations["vary"].get("archs", [])]
        for dataset, arch in itertools.product(_earlystop_datasets(es), named):
            _pair(pairs, dataset, arch, "earlystop.ablations")
    ddpm, archs = config["ddpm"], _prior_archs(config)
    for arch in archs:
        _pair(pairs, ddpm["sample"]["dataset"], arch, "ddpm.sample.prior_arch")
    if ddpm.get("generation"):
        _pair(pairs, ddpm["generation"]["dataset"], archs[0], "ddpm.generation with its prior_arch")
    return pairs


def task_pairs(config: dict) -> Pairs:
    """(dataset, task) -> the keys that apply that task to that dataset."""
    pairs: Pairs = defaultdict(list)
    for i, block in enumerate(config["dip"]["grid"]):
        for dataset in block["datasets"]:
            for task in block["tasks"]:
                _pair(pairs, dataset, task, f"dip.grid[{i}]")
    es = config.get("earlystop") or {}
    for i, block in enumerate(es.get("grid", [])):
        for dataset, task in itertools.product(_earlystop_datasets(es), block["tasks"]):
            _pair(pairs, dataset, task, f"earlystop.grid[{i}]")
    guided = es.get("guided") or {}
    for dataset, task in itertools.product(guided.get("datasets", []), guided.get("tasks", [])):
        _pair(pairs, dataset, task, "earlystop.guided")
    ablations = es.get("ablations") or {}
    for dataset, task in itertools.product(_earlystop_datasets(es), ablations.get("tasks", [])):
        _pair(pairs, dataset, task, "earlystop.ablations")
    for key in ("sample", "generation"):
        part = config["ddpm"].get(key)
        if part:
            for task in _names(part["task"]):
                _pair(pairs, part["dataset"], task, f"ddpm.{key}")
    return pairs


def _fit_errors(config: dict) -> list[str]:
    """Architectures and tasks that cannot work on the images they are paired with."""
    datasets, tasks, archs = config["data"]["datasets"], config["tasks"], config["dip"]["archs"]
    errors = []
    for (dataset, arch), keys in arch_pairs(config).items():
        if dataset in datasets and arch in archs:
            errors += _depth_errors(dataset, datasets[dataset], arch, archs[arch], keys)
    for (dataset, task), keys in task_pairs(config).items():
        if dataset in datasets and task in tasks:
            errors += _sr_errors(dataset, datasets[dataset], task, tasks[task], keys)
            errors += _mask_errors(dataset, datasets[dataset], task, tasks[task], keys)
    return errors


def _depth_errors(dataset: str, data: dict, arch: str, spec: dict, keys: list[str]) -> list[str]:
    from .dip.models import check_depth_fits

    side, halvings = image_side(data), _halvings(spec)
    if side is None or halvings is None:
        return []
    field, count = halvings
    try:
        check_depth_fits(spec["kind"], count, (side, side), field)
    except ValueError as err:
        default = "" if field in spec else f" ({field} {count} is the default)"
        return [
            f"'dip.archs.{arch}.{field}': {err}{default}; dataset {dataset!r} is paired "
            f"with architecture {arch!r} by {', '.join(keys)}"
        ]
    return []


def _sr_errors(dataset: str, data: dict, task: str, spec: dict, keys: list[str]) -> list[str]:
    side, factor = image_side(data), spec.get("factor")
    if spec["kind"] != "sr" or side is None or factor is None or side % factor == 0:
        return []
    return [
        f"'tasks.{task}.factor': {factor} does not divide the {side}x{side} images of dataset "
        f"{dataset!r} (paired by {', '.join(keys)})"
    ]


def _mask_errors(dataset: str, data: dict, task: str, spec: dict, keys: list[str]) -> list[str]:
    # Only folder datasets read <name>_mask images; the other sources never have masks.
    if spec.get("mask") != "dataset" or data["source"] == "folder":
        return []
    return [
        f"'tasks.{task}.mask': 'dataset' needs a folder dataset with mask images, but dataset "
        f"{dataset!r} has source {data['source']!r} (paired by {', '.join(keys)})"
    ]


# ---------------------------------------------------------------------- DDPM, early stop


def _ddpm_errors(config: dict) -> list[str]:
    datasets, tasks, ddpm = config["data"]["datasets"], config["tasks"], config["ddpm"]
    errors = _missing("dataset", "ddpm.dataset", [ddpm["dataset"]], datasets)
    T, steps = ddpm.get("T", 1000), ddpm.get("steps", 800000)
    late = [c for c in ddpm.get("checkpoints", []) if c > steps]
    if late:
        errors.append(f"'ddpm.checkpoints': {late} exceed ddpm.steps = {steps}")
    sample = ddpm["sample"]
    for i, mode in enumerate(ddpm["modes"]):
        if mode["mode"] != "full":
            t_max = mode.get("t_max")
            # A t0 above t_max is not an error: that model's cells are left out by name
            # (grid.left_out_cells); only a t0 no model can serve is.
            if t_max is None or not 1 <= t_max <= T:
                errors.append(f"'ddpm.modes[{i}].t_max' must be in 1..T={T}; got {t_max!r}")
        errors += _prior_mode_errors(config, f"ddpm.modes[{i}]", mode)
    served = max((m.get("t_max") or T) if m["mode"] != "full" else T for m in ddpm["modes"])
    unserved = [t0 for t0 in sample["t0"] if t0 > served]
    if unserved:
        errors.append(
            f"'ddpm.sample.t0' {unserved} exceed every model's t_max (largest {served}): "
            "no model can start there"
        )
    errors += _missing("dataset", "ddpm.sample.dataset", [sample["dataset"]], datasets)
    errors += _missing("task", "ddpm.sample.task", _names(sample["task"]), tasks)
    errors += _missing(
        "architecture", "ddpm.sample.prior_arch", _prior_archs(config), config["dip"]["archs"]
    )
    errors += _prior_iters_errors(sample, config["dip"])
    generation = ddpm.get("generation")
    if generation:
        errors += _missing("dataset", "ddpm.generation.dataset", [generation["dataset"]], datasets)
        errors += _missing("task", "ddpm.generation.task", [generation["task"]], tasks)
        late = [t for t in generation["t0"] if t > T]
        if late:
            errors.append(f"'ddpm.generation.t0': {late} exceed ddpm.T = {T}")
        errors += _generation_errors(config)
    late_eval = [t for t in ddpm.get("eval_t", []) if t > T]
    if late_eval:
        errors.append(f"'ddpm.eval_t': {late_eval} exceed ddpm.T = {T}")
    late_t0 = [t for t in sample["t0"] if t > T]
    if late_t0:
        errors.append(f"'ddpm.sample.t0': {late_t0} exceed ddpm.T = {T}")
    return errors


def _generation_errors(config: dict) -> list[str]:
    """The generation arm's grid: its priors are snapshots of the DIP fit, its samples
    from noise have a full model to start at T from, and a cell from noise that
    ``ddpm.sample.generate`` also asks for is asked for with one sample count."""
    ddpm, dip = config["ddpm"], config["dip"]
    generation, T = ddpm["generation"], ddpm.get("T", 1000)
    errors = []
    snapshots = set(dip.get("snapshots", [])) | {dip.get("iters", 3000)}
    prior_iters = generation.get("prior_iters")
    listed = prior_iters if isinstance(prior_iters, list) else [prior_iters]
    for iters in listed:
        if iters is not None and iters not in snapshots:
            errors.append(
                f"'ddpm.generation.prior_iters' {iters} is not a DIP snapshot (dip.snapshots "
                f"{dip.get('snapshots')} or dip.iters {dip.get('iters')}): a generation prior "
                "is the fit's output at one of them"
            )
    if generation.get("own_part") and not (config.get("metrics") or {}).get("classifier"):
        errors.append(
            "'ddpm.generation.own_part' is true, but only the generation part's scores "
            "(which need metrics.classifier, not set) would build its cells: set the "
            "classifier or leave own_part false"
        )
    noise = generation.get("noise")
    if not noise:
        return errors
    if not any(m["mode"] == "full" or m.get("t_max") == T for m in ddpm["modes"]):
        errors.append(
            "'ddpm.generation.noise' asks for samples from noise at T, but ddpm.modes has no "
            f"model trained up to T = {T} (add the mode 'full')"
        )
    shared = _shared_noise_cells(config, noise)
    count = ddpm["sample"].get("generate", 0)
    if shared and count and count != noise["generate"]:
        errors.append(
            f"'ddpm.generation.noise.generate' {noise['generate']} differs from "
            f"ddpm.sample.generate {count}, and both ask for the samples from noise at steps "
            f"{sorted({s for s, _ in shared})} with seeds {sorted({d for _, d in shared})}: "
            "one cell holds one sample set; make the counts equal or the steps or seeds "
            "disjoint"
        )
    return errors


def _shared_noise_cells(config: dict, noise: dict) -> set[tuple[int, int]]:
    """(steps, seed) of the cells from noise both ddpm.sample and ddpm.generation.noise
    ask for (the models are the same: every full model at its final checkpoint)."""
    ddpm = config["ddpm"]
    generation, sample = ddpm["generation"], ddpm["sample"]
    steps = generation.get("steps", 25)
    seeds = generation.get("seeds") or sample["seeds"]
    noise_steps = noise.get("steps") or (steps if isinstance(steps, list) else [steps])
    wanted = set(itertools.product(noise_steps, noise.get("seeds") or seeds))
    return wanted & set(itertools.product(sample["steps"], sample["seeds"]))


def _block_errors(config: dict) -> list[str]:
    """Each sample block names tasks, architectures, modes and prior durations that exist.
    (A prior outside the DIP grid is no error: its DIP cell is fitted on demand.)"""
    ddpm, dip = config["ddpm"], config["dip"]
    sample, modes = ddpm["sample"], {m["mode"] for m in ddpm["modes"]}
    errors = []
    for i, block in enumerate(sample.get("blocks") or []):
        key = f"ddpm.sample.blocks[{i}]"
        spec = {**sample, **block}
        tasks, archs = _names(spec["task"]), _names(spec.get("prior_arch", DEFAULT_PRIOR_ARCH))
        errors += _missing("task", f"{key}.task", tasks, config["tasks"])
        errors += _missing("architecture", f"{key}.prior_arch", archs, dip["archs"])
        errors += _missing("training mode", f"{key}.modes", block.get("modes", []), modes)
        errors += [e.replace("'ddpm.sample.", f"'{key}.") for e in _prior_iters_errors(spec, dip)]
    return errors


def _prior_iters_errors(sample: dict, dip: dict) -> list[str]:
    prior_iters = sample.get("prior_iters", 1000)
    snapshots = set(dip.get("snapshots", [])) | {dip.get("iters", 3000)}
    return [
        f"'ddpm.sample.prior_iters' {iters} must be one of dip.snapshots "
        f"{dip.get('snapshots')} or dip.iters"
        for iters in (prior_iters if isinstance(prior_iters, list) else [prior_iters])
        if iters not in snapshots
    ]


def _earlystop_datasets(es: dict) -> list[str]:
    """Every dataset the early-stopping grid runs on: ``dataset`` and ``datasets`` (both
    at once are an error of their own, and both are checked)."""
    named = [es["dataset"]] if "dataset" in es else []
    return named + list(es.get("datasets") or [])


def _earlystop_errors(config: dict) -> list[str]:
    es = config.get("earlystop")
    if not es:
        return []
    datasets, tasks, archs = config["data"]["datasets"], config["tasks"], config["dip"]["archs"]
    errors = _earlystop_dataset_key_errors(es)
    if "dataset" in es:
        errors += _missing("dataset", "earlystop.dataset", [es["dataset"]], datasets)
    errors += _missing("dataset", "earlystop.datasets", es.get("datasets") or [], datasets)
    errors += _earlystop_plain_fit_errors(es)
    for i, cell in enumerate(es.get("grid", [])):
        errors += _missing("task", f"earlystop.grid[{i}].tasks", cell["tasks"], tasks)
        errors += _missing("architecture", f"earlystop.grid[{i}].archs", cell["archs"], archs)
        errors += _denoising_errors(f"earlystop.grid[{i}].tasks", cell["tasks"], tasks)
    return errors + _ablation_errors(config)


def _denoising_errors(key: str, names: list[str], tasks: dict) -> list[str]:
    not_denoise = [t for t in names if t in tasks and tasks[t]["kind"] != "denoise"]
    if not not_denoise:
        return []
    return [
        f"'{key}': {not_denoise} are not denoising tasks; the stopping rules need a known "
        "noise level"
    ]


def _ablation_errors(config: dict) -> list[str]:
    """``earlystop.ablations``: tasks and architectures that exist, denoising tasks,
    observation seeds the config draws."""
    ablations = (config.get("earlystop") or {}).get("ablations")
    if not ablations:
        return []
    tasks, archs = config["tasks"], config["dip"]["archs"]
    key = "earlystop.ablations"
    errors = _missing("task", f"{key}.tasks", ablations["tasks"], tasks)
    errors += _denoising_errors(f"{key}.tasks", ablations["tasks"], tasks)
    named = [ablations["centre"]["arch"], *ablations["vary"].get("archs", [])]
    errors += _missing("architecture", f"{key}.centre.arch / vary.archs", named, archs)
    drawn = set(config.get("observation_seeds") or [0])
    unknown = sorted(set(ablations.get("obs_seeds") or []) - drawn)
    if unknown:
        errors.append(f"'{key}.obs_seeds': {unknown} are not in observation_seeds {sorted(drawn)}")
    return errors


def _earlystop_dataset_key_errors(es: dict) -> list[str]:
    if "dataset" in es and "datasets" in es:
        return [
            "'earlystop.dataset' and 'earlystop.datasets' exclude each other: give one "
            "dataset as 'dataset' or several as 'datasets', not both"
        ]
    if es.get("grid") and "dataset" not in es and "datasets" not in es:
        return [
            "'earlystop.dataset' is required when 'earlystop.grid' is set (or several as "
            "'earlystop.datasets')"
        ]
    return []


def _earlystop_plain_fit_errors(es: dict) -> list[str]:
    """A cap belongs to a run past the peak, and must leave room for the fixed length it
    runs at least: the longest progressive fit and the largest budget (what the cell
    would refuse only after fitting the progressive variant)."""
    patience, cap = es.get("run_past_peak"), es.get("max_iters")
    if cap is None:
        if patience is None:
            return []
        return [
            f"'earlystop.run_past_peak' ({patience}) needs 'earlystop.max_iters', the hard "
            "cap of the run past the PSNR peak"
        ]
    if patience is None:
        return [
            f"'earlystop.max_iters' ({cap}) caps a run past the PSNR peak; it needs "
            "'earlystop.run_past_peak' (iterations to run past the peak)"
        ]
    least = max([*es.get("budgets", [500, 1000, 2000]), _longest_progressive_fit(es)])
    if cap < least:
        return [
            f"'earlystop.max_iters' ({cap}) is below the plain fit's least length {least} "
            "(the longest progressive fit, (stages - 1) x iters_per_stage + final_iters, "
            "and the largest budget)"
        ]
    return []


def _longest_progressive_fit(es: dict) -> int:
    """grid.earlystop_plain_iters' progressive part on the unfilled config: every plain
    fit runs at least as long as the config's longest progressive fit, the grid's or the
    ablations' (one plain fit serves both)."""
    stages = [k for block in es.get("grid", []) for k in block["stages"]]
    ablations = es.get("ablations") or {}
    if ablations:
        stages += [ablations["centre"]["stages"], *ablations.get("vary", {}).get("stages", [])]
    longest = max(stages, default=1)
    return (longest - 1) * es.get("iters_per_stage", 100) + es.get("final_iters", 3000)


# ------------------------------------------------------------------------ guided DIP

GUIDED_KEY = "earlystop.guided"


def _guided_errors(config: dict) -> list[str]:
    """``earlystop.guided``: names that exist, denoising tasks, one trained model that covers
    every step it is used at, lam 0 (the plain-DIP reference) listed, mix weights of at most
    1, a classifier for form perc, tiles that cover the image, and a summary folder outside
    the cell folders."""
    guided = (config.get("earlystop") or {}).get("guided")
    if not guided:
        return []
    datasets, tasks, archs = config["data"]["datasets"], config["tasks"], config["dip"]["archs"]
    errors = _missing("dataset", f"{GUIDED_KEY}.datasets", guided["datasets"], datasets)
    errors += _missing("task", f"{GUIDED_KEY}.tasks", guided["tasks"], tasks)
    errors += _missing("architecture", f"{GUIDED_KEY}.archs", guided["archs"], archs)
    not_denoise = [t for t in guided["tasks"] if t in tasks and tasks[t]["kind"] != "denoise"]
    if not_denoise:
        errors.append(
            f"'{GUIDED_KEY}.tasks': {not_denoise} are not denoising tasks; guided DIP and the "
            "DDPM alone start from the observation at the step matching its noise level"
        )
    errors += _guided_weight_errors(guided) + _guided_tile_errors(guided)
    if "perc" in guided["forms"] and not (config.get("metrics") or {}).get("classifier"):
        errors.append(
            f"'{GUIDED_KEY}.forms': form perc compares the features of metrics.classifier, "
            "which is not configured; configure it or drop the form"
        )
    model_errors, t_max = _guided_model_errors(config, guided)
    if t_max is not None:
        model_errors += _guided_step_errors(config, guided, t_max)
    return errors + model_errors + _guided_out_errors(config)


def _guided_weight_errors(guided: dict) -> list[str]:
    lams, errors = guided["lams"], []
    if 0 not in lams:
        errors.append(
            f"'{GUIDED_KEY}.lams' {lams} must include 0: plain DIP with the same iterations is "
            "the reference every guided fit is paired with"
        )
    too_big = [lam for lam in lams if lam > 1]
    if "mix" in guided["forms"] and too_big:
        errors.append(
            f"'{GUIDED_KEY}.lams' {too_big} exceed 1, the largest weight form mix takes (its "
            "target is (1 - lam) y + lam D(y)); drop them or the form"
        )
    return errors


def _guided_tile_errors(guided: dict) -> list[str]:
    from .earlystop.guided import GUIDED_DEFAULTS

    tile = guided.get("tile", GUIDED_DEFAULTS["tile"])
    stride = guided.get("stride", GUIDED_DEFAULTS["stride"])
    if stride <= tile:
        return []
    return [
        f"'{GUIDED_KEY}.stride' {stride} exceeds {GUIDED_KEY}.tile {tile}: the tiles would leave "
        "pixels between them"
    ]


def _guided_model_errors(config: dict, guided: dict) -> tuple[list[str], int | None]:
    """(errors, t_max) of the one ``ddpm.modes`` entry that ``mode`` (and ``t_max``) name;
    t_max is None when they name none or several."""
    ddpm, T = config["ddpm"], config["ddpm"].get("T", 1000)
    named = [m for m in ddpm["modes"] if m["mode"] == guided["mode"]]
    found = [m for m in named if guided.get("t_max") in (None, _trained_t_max(m, T))]
    if not named:
        defined = list(dict.fromkeys(m["mode"] for m in ddpm["modes"]))
        return _missing("training mode", f"{GUIDED_KEY}.mode", [guided["mode"]], defined), None
    if not found:
        return [
            f"'{GUIDED_KEY}.t_max' {guided['t_max']} is not the t_max of mode "
            f"{guided['mode']!r} in ddpm.modes ({[_trained_t_max(m, T) for m in named]})"
        ], None
    if len(found) > 1:
        return [
            f"'{GUIDED_KEY}.mode' {guided['mode']!r} names {len(found)} models of ddpm.modes "
            f"(t_max {[_trained_t_max(m, T) for m in found]}); give {GUIDED_KEY}.t_max"
        ], None
    ckpt, kept = guided.get("ckpt", ddpm.get("steps")), ddpm.get("checkpoints", [])
    if ckpt not in kept:
        return [
            f"'{GUIDED_KEY}.ckpt' {ckpt} (default: ddpm.steps) is not one of ddpm.checkpoints "
            f"{kept}, the only weights training keeps"
        ], None
    return [], _trained_t_max(found[0], T)


def _trained_t_max(mode: dict, T: int) -> int:
    return T if mode["mode"] == "full" else mode.get("t_max", T)


def _guided_step_errors(config: dict, guided: dict, t_max: int) -> list[str]:
    """Every step the model is used at is one it was trained on: the sigma-matched step of
    each task (the DDPM alone, form mix) and, for form red, t_g of guidance_sigma."""
    from .earlystop.guided import GUIDED_DEFAULTS

    used = [
        (f"{GUIDED_KEY}.tasks", f"task {task!r} (sigma {spec['sigma']})", spec["sigma"] / 255.0)
        for task, spec in ((t, config["tasks"].get(t, {})) for t in guided["tasks"])
        if spec.get("kind") == "denoise" and "sigma" in spec
    ]
    if "red" in guided["forms"]:
        sigma = guided.get("guidance_sigma", GUIDED_DEFAULTS["guidance_sigma"])
        used.append((f"{GUIDED_KEY}.guidance_sigma", f"guidance_sigma {sigma} (t_g)", sigma))
    model = f"the model of {GUIDED_KEY}.mode {guided['mode']!r}"
    errors = []
    for key, what, sigma in used:
        step, error = _sigma_step(config, sigma)
        if error:
            errors.append(f"'{key}': {what}: {error}")
        elif step > t_max:
            errors.append(
                f"'{key}': {what} needs diffusion step {step}, beyond t_max {t_max} of {model}"
            )
    return errors


def _sigma_step(config: dict, sigma01: float) -> tuple[int, str]:
    """(the step matching noise of std ``sigma01``, '') or (0, why there is none)."""
    from .ddpm.diffusion import Diffusion
    from .ddpm.sample import t_for_sigma

    ddpm = config["ddpm"]
    diffusion = Diffusion(ddpm.get("schedule", "linear"), int(ddpm.get("T", 1000)))
    try:
        return t_for_sigma(diffusion, sigma01), ""
    except ValueError as err:
        return 0, str(err)


def _guided_out_errors(config: dict) -> list[str]:
    """The summary is written to earlystop.out; inside the cells' folder it would be taken
    for a cell's file."""
    out = str(config["earlystop"].get("out", "")).rstrip("/")
    cells = f"{RESULTS}/{GUIDED.root}"
    if out != cells and not out.startswith(f"{cells}/"):
        return []
    return [
        f"'earlystop.out' {out!r} lies inside the guided cells' folder {cells}; the guided "
        "summary (guided_*.csv, guided.md) is written to earlystop.out: give another folder"
    ]


# ------------------------------------------------------------------------ duplicates


def _grid_value_lists(config: dict) -> Iterator[tuple[str, object]]:
    """(key, value) of every list whose entries become grid values or named outputs."""
    yield "observation_seeds", config.get("observation_seeds")
    dip = _section(config, "dip")
    for field in ("seeds", "snapshots"):
        yield f"dip.{field}", dip.get(field)
    for i, block in enumerate(_list(dip.get("grid"))):
        for field in ("datasets", "tasks", "archs"):
            yield f"dip.grid[{i}].{field}", _section(block, field, list)
    ddpm = _section(config, "ddpm")
    for field in ("seeds", "checkpoints", "eval_t"):
        yield f"ddpm.{field}", ddpm.get(field)
    sample = _section(ddpm, "sample")
    for field in ("t0", "steps", "lam", "window", "k", "seeds", "prior_iters"):
        yield f"ddpm.sample.{field}", sample.get(field)
    generation = _section(ddpm, "generation")
    for field in ("t0", "steps", "seeds", "obs_seeds", "prior_iters"):
        yield f"ddpm.generation.{field}", generation.get(field)
    noise = _section(generation, "noise")
    for field in ("steps", "seeds"):
        yield f"ddpm.generation.noise.{field}", noise.get(field)
    es = _section(config, "earlystop")
    for field in ("datasets", "budgets", "wmv_windows", "loo_taus", "loo_patiences"):
        yield f"earlystop.{field}", es.get(field)
    for i, block in enumerate(_list(es.get("grid"))):
        for field in ("tasks", "archs", "schedules", "stages", "sigma_max", "patience"):
            yield f"earlystop.grid[{i}].{field}", _section(block, field, list)
    # lam 0 and 0.0 would both name the one plain-DIP cell.
    guided = _section(es, "guided")
    for field in ("datasets", "tasks", "archs", "forms", "lams"):
        yield f"earlystop.guided.{field}", guided.get(field)


def _section(parent: object, key: str, kind: type = dict):
    """``parent[key]`` where both have the expected shape, else an empty one (the schema
    reports the bad shape; the duplicate check must not trip over it)."""
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, kind) else kind()


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _duplicate_errors(config: dict) -> list[str]:
    errors = [
        _duplicates_in(key, values)
        for key, values in _grid_value_lists(config)
        if isinstance(values, list)
    ]
    return [e for e in errors if e] + _duplicate_mode_errors(config)


def _duplicates_in(key: str, values: list) -> str:
    spelled = [
        (canonical(v), v)
        for v in values
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    ]
    counts = Counter(name for name, _ in spelled)
    repeated = [name for name, count in counts.items() if count > 1]
    if not repeated:
        return ""
    groups = "; ".join(
        f"{', '.join(repr(v) for name, v in spelled if name == r)} all name {r!r}" for r in repeated
    )
    return f"'{key}' lists a value more than once ({groups}); list each value once"


def _prior_mode_errors(config: dict, key: str, mode: dict) -> list[str]:
    """A prior-* mode names its priors (and only it does); they must exist and belong to
    the DDPM's own training images, so a prior sample is an image the model trains on."""
    prior = mode.get("prior")
    named_prior = str(mode["mode"]).startswith("prior-")
    if named_prior != bool(prior):
        return [
            f"'{key}': mode {mode['mode']!r} "
            + ("needs a 'prior' (its DIP priors and share)" if named_prior else "")
            + ("has a 'prior', so its name must start with 'prior-'" if prior else "")
        ]
    if not prior:
        return []
    datasets, dip = config["data"]["datasets"], config["dip"]
    errors = _missing("dataset", f"{key}.prior.dataset", [prior["dataset"]], datasets)
    errors += _missing("task", f"{key}.prior.task", [prior["task"]], config["tasks"])
    errors += _missing("architecture", f"{key}.prior.arch", [prior["arch"]], dip["archs"])
    if prior["iters"] not in set(dip.get("snapshots", [])) | {dip.get("iters")}:
        errors.append(
            f"'{key}.prior.iters' {prior['iters']} is not a DIP snapshot "
            f"(dip.snapshots {dip.get('snapshots')} or dip.iters {dip.get('iters')})"
        )
    if not errors and not _subset_of(
        datasets[prior["dataset"]], datasets[config["ddpm"]["dataset"]]
    ):
        errors.append(
            f"'{key}.prior.dataset' {prior['dataset']!r} must be a subset of the DDPM's "
            f"training set {config['ddpm']['dataset']!r} (that dataset itself, or drawn from "
            "the whole CIFAR-10 split it is)"
        )
    return errors


CIFAR10_SPLIT_SIZE = {"train": 50000, "test": 10000}


def _subset_of(spec: dict, of: dict) -> bool:
    """Whether dataset ``spec``'s images are among ``of``'s for sure: the same dataset, or
    ``of`` is a whole CIFAR-10 split that ``spec`` draws from. (Two class-balanced draws of
    different sizes are not nested in general; training checks the names anyway.)"""
    if spec == of:
        return True
    same_split = all(spec.get(k) == of.get(k) for k in ("source", "split"))
    return same_split and of.get("n") == CIFAR10_SPLIT_SIZE.get(str(of.get("split")))


# ------------------------------------------------------------------- image set roles


def _may_share_images(a: dict, b: dict) -> bool:
    """Whether two datasets can hold one image: the same spec, or two draws from one
    CIFAR-10 split (its class-balanced draws are not disjoint in general)."""
    if a == b:
        return True
    cifar = a.get("source") == b.get("source") == "cifar10"
    return cifar and a.get("split") == b.get("split")


def _generates(config: dict) -> bool:
    """Whether the config makes new images: the DIP-started generation variant or
    unconditional samples from noise (both scored against the reference set)."""
    ddpm = config["ddpm"]
    return bool(ddpm.get("generation")) or bool(ddpm["sample"].get("generate"))


def _disjoint_set_errors(config: dict) -> list[str]:
    """The image sets the generation metrics compare are disjoint where they must be.

    Must be disjoint (refused when they can share an image):

    - the reference set (``metrics.reference``) and the DDPM's training set
      (``ddpm.dataset``): generated images are scored against the reference, and the
      reference is also the held-out baseline of the memorisation test (its distances
      to the training images are what a model that never copies would give);
    - the generation sources (``ddpm.generation.dataset``) and the reference set: each
      DIP-started sample stays close to its source, so a reference holding the sources
      would flatter KID and FID;
    - the classifier's training and test sets: its accuracy floor is measured on images
      it never saw;
    - the classifier's training set and the reference set: the features of the reference
      would be those of images the classifier was fitted to, the samples' not.

    Intended nestings (not refused): the generation sources are DIP fits of the DDPM's
    training images, so they lie in its training split (sampling from a prior of a
    training image is the generation variant's design); the classifier trains on the
    training split, which holds the DDPM's training images and the sources (its
    features are a fixed map of CIFAR-10 images, not a model of the samples).
    """
    datasets, metrics = config["data"]["datasets"], config.get("metrics", {})
    reference = metrics.get("reference", DEFAULT_REFERENCE)
    pairs = []
    if _generates(config):
        pairs.append(("ddpm.dataset", config["ddpm"]["dataset"], _HELD_OUT_REFERENCE))
    generation = config["ddpm"].get("generation")
    if generation:
        pairs.append(("ddpm.generation.dataset", generation["dataset"], _SOURCES_NOT_REFERENCE))
    checks = [(key, name, "metrics.reference", reference, why) for key, name, why in pairs]
    classifier = metrics.get("classifier")
    if classifier:
        train = ("metrics.classifier.train", classifier["train"])
        checks.append(("metrics.classifier.test", classifier["test"], *train, _UNSEEN_TEST))
        checks.append(("metrics.reference", reference, *train, _REFERENCE_NOT_FITTED))
    errors = [_overlap_error(*check, datasets) for check in checks]
    return [e for e in errors if e]


_HELD_OUT_REFERENCE = (
    "the reference set scores the generated images and is the held-out baseline of the "
    "memorisation test, so it must hold no DDPM training image"
)
_SOURCES_NOT_REFERENCE = (
    "each DIP-started sample stays close to its source image, so a reference holding the "
    "sources would flatter KID and FID (the sources are meant to be DDPM training images, "
    "within ddpm.dataset's split: an intended nesting)"
)
_UNSEEN_TEST = (
    "the classifier's accuracy floor is measured on images it never trained on (its "
    "training split holding the DDPM's training images and the generation sources is an "
    "intended nesting)"
)
_REFERENCE_NOT_FITTED = (
    "the reference's features would come from images the classifier was fitted to, and "
    "the samples' would not"
)


def _overlap_error(
    key: str, name: str, other_key: str, other: str, why: str, datasets: dict
) -> str:
    """One message when two roles' datasets can share an image, else ''."""
    if name not in datasets or other not in datasets:
        return ""  # a name that points nowhere is reported by the name checks
    if not _may_share_images(datasets[name], datasets[other]):
        return ""
    split = datasets[name].get("split")
    if split:
        shared, fix = f"both drawn from the CIFAR-10 {split} split", "the other split"
    else:
        shared, fix = "the same image set", "other images"
    return (
        f"'{key}' {name!r} and '{other_key}' {other!r} can share images ({shared}): {why}; "
        f"give one of them a dataset of {fix}"
    )


def _prior_training_errors(config: dict) -> list[str]:
    """The prior-training comparison: checkpoints within its length (the last one the
    length itself), modes as valid as ddpm's, a prior mode named in both lists with one
    setting, and a sampling grid its models can serve."""
    pt = config.get("prior_training")
    if not pt:
        return []
    ddpm, T = config["ddpm"], config["ddpm"].get("T", 1000)
    steps, ckpts = pt["steps"], pt["checkpoints"]
    errors = []
    if max(ckpts) != steps:
        errors.append(
            f"'prior_training.checkpoints' {ckpts} must end at prior_training.steps = {steps} "
            "(the comparison's final models)"
        )
    if steps == ddpm.get("steps") and sorted(ckpts) != sorted(ddpm["checkpoints"]):
        errors.append(
            f"'prior_training.steps' {steps} equals ddpm.steps but its checkpoints {ckpts} "
            f"differ from ddpm.checkpoints {ddpm['checkpoints']}: one training length "
            "keeps one set of checkpoints"
        )
    main = {m["mode"]: m for m in ddpm["modes"]}
    for i, mode in enumerate(pt["modes"]):
        key = f"prior_training.modes[{i}]"
        if mode["mode"] != "full" and not 1 <= (mode.get("t_max") or 0) <= T:
            errors.append(f"'{key}.t_max' must be in 1..T={T}; got {mode.get('t_max')!r}")
        errors += _prior_mode_errors(config, key, mode)
        other = main.get(mode["mode"])
        if other is not None and other.get("prior") and other != mode:
            errors.append(
                f"'{key}': mode {mode['mode']!r} is also in ddpm.modes with other settings; "
                "name one of them differently"
            )
    errors += _duplicate_errors_of("prior_training.modes", pt["modes"])
    sample = {**ddpm["sample"], **pt["sample"]}
    errors += _missing(
        "task", "prior_training.sample.task", _names(sample["task"]), config["tasks"]
    )
    errors += [
        e.replace("'ddpm.sample.", "'prior_training.sample.")
        for e in _prior_iters_errors(sample, config["dip"])
    ]
    served = max(T if m["mode"] == "full" else m.get("t_max") or T for m in pt["modes"])
    for i, block in enumerate(pt["sample"].get("blocks") or [{}]):
        key = f"prior_training.sample.blocks[{i}]"
        unknown = sorted(set(block.get("ckpt", [])) - set(ckpts))
        if unknown:
            errors.append(f"'{key}.ckpt' {unknown} are not prior_training.checkpoints {ckpts}")
        unserved = [t0 for t0 in block.get("t0", sample["t0"]) if t0 > served]
        if unserved:
            errors.append(f"'{key}.t0' {unserved} exceed every model's t_max (largest {served})")
    return errors


def _duplicate_errors_of(key: str, modes: list) -> list[str]:
    spelled = [
        f"{m.get('mode')} t_max={m.get('t_max')}" if m.get("mode") != "full" else "full"
        for m in modes
        if isinstance(m, dict)
    ]
    repeated = sorted(name for name, count in Counter(spelled).items() if count > 1)
    if not repeated:
        return []
    return [f"'{key}' lists a training mode more than once ({', '.join(repeated)})"]


def _duplicate_mode_errors(config: dict) -> list[str]:
    return _duplicate_errors_of("ddpm.modes", _list(_section(config, "ddpm").get("modes")))


# ---------------------------------------------------------------------------- all checks

Check = Callable[[dict], list[str]]
# Each check with the top-level sections it reads; it runs only where the schema
# accepted all of them.
CHECKS: tuple[tuple[frozenset[str], Check], ...] = (
    (frozenset({"data"}), _dataset_errors),
    (frozenset({"dip"}), _arch_errors),
    (frozenset({"data", "tasks", "dip"}), _dip_errors),
    (frozenset({"data", "tasks", "dip", "ddpm"}), _ddpm_errors),
    (frozenset({"data", "tasks", "dip", "ddpm"}), _block_errors),
    (frozenset({"data", "tasks", "dip", "ddpm", "prior_training"}), _prior_training_errors),
    (frozenset({"data", "tasks", "dip", "earlystop"}), _earlystop_errors),
    (frozenset({"data", "tasks", "dip", "ddpm", "earlystop"}), _guided_errors),
    (frozenset({"data", "metrics"}), _metrics_errors),
    (frozenset({"data", "ddpm", "metrics"}), _disjoint_set_errors),
    (frozenset({"data", "tasks", "dip", "ddpm", "earlystop"}), _fit_errors),
    (frozenset(), _duplicate_errors),
)
