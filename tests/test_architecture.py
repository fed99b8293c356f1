"""Standalone architecture files: MONAI networks become plain-torch source (torch.fx) that rebuilds
the model in a process that cannot import monai or mmv_zoo; what fx cannot trace falls back."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mmv_zoo.entry import load_entry
from mmv_zoo.export.architecture import architecture, example_inputs, export_model
from mmv_zoo.export.fx_source import NotTraceable, standalone_source
from mmv_zoo.frameworks.fcn import InferenceModel

# (entry, overrides): 2D cases on the segmentation entry (softmax inside), 3D on the regression entry.
CASES = {
    "unet_2d": ("nuclei_semseg_2d", ["network={kind: unet, channels: [4, 8, 16]}"]),
    "unet_3d": ("denoise_3d_planaria", ["network.channels=[4,8,16]", "network.strides=[[1,2,2],[2,2,2]]",
                                     "network.num_res_units=1"]),  # anisotropic strides
    "attention_unet_2d": ("nuclei_semseg_2d", ["network={kind: attention_unet, channels: [4, 8, 16]}"]),
    "attention_unet_3d": ("denoise_3d_planaria", ["network={kind: attention_unet, channels: [4, 8], strides: [2]}"]),
    "basic_unet_2d": ("nuclei_semseg_2d", ["network={kind: basic_unet, features: [4, 4, 8, 8, 16, 4]}"]),
    "dyn_unet_3d": ("denoise_3d_planaria", ["network={kind: dyn_unet, kernel_size: [3, 3, 3], strides: [1, 2, 2], "
                                        "filters: [4, 8, 16], res_block: true}"]),
    "unetr_2d": ("nuclei_semseg_2d", ["network={kind: unetr, img_size: [32, 32], hidden_size: 32, mlp_dim: 32, "
                                      "num_heads: 2, feature_size: 4}", "data.patch=[32,32]"]),
}
SWIN = ["network={kind: swin_unetr, feature_size: 12, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1], window_size: 4}"]

CHILD = textwrap.dedent('''
    import importlib.util, json, sys
    sys.modules["monai"] = None  # any `import monai...` now raises ImportError
    sys.modules["mmv_zoo"] = None
    import torch
    results = {}
    for case in json.loads(sys.argv[1]):
        spec = importlib.util.spec_from_file_location("architecture_" + case["name"], case["source"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.ExportedModel().eval()
        model.load_state_dict(torch.load(case["state"], weights_only=True), strict=True)
        with torch.no_grad():
            outputs = [model(x) for x in torch.load(case["inputs"], weights_only=True)]
        torch.save(outputs, case["outputs"])
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("monai", "mmv_zoo"))
    print(json.dumps({"loaded": loaded}))
''')


def _imports(source: str) -> set[str]:
    tree = ast.parse(source)
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def _perturbed(model: nn.Module) -> nn.Module:
    """The model with every parameter moved off its initial value (as after training)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def isolated_outputs(tmp_path_factory):
    """Per case: the generated source, the expected outputs and those of the source run in a fresh
    `python -I` process where monai and mmv_zoo cannot be imported (one process for all cases)."""
    tmp = tmp_path_factory.mktemp("arch")
    cases, expected, sources = [], {}, {}
    for name, (entry_name, overrides) in CASES.items():
        entry = load_entry(entry_name, overrides)
        model = _perturbed(export_model(entry, None))
        arch = architecture(entry, model)
        assert arch.requirements == [] and arch.kwargs == {} and arch.note is None, name
        inputs = example_inputs(entry)
        with torch.no_grad():
            expected[name] = [model(x) for x in inputs]
        (tmp / f"{name}.py").write_text(arch.text)
        torch.save(model.state_dict(), tmp / f"{name}.pt")
        torch.save(inputs, tmp / f"{name}_in.pt")
        sources[name] = arch.text
        cases.append({"name": name, "source": str(tmp / f"{name}.py"), "state": str(tmp / f"{name}.pt"),
                      "inputs": str(tmp / f"{name}_in.pt"), "outputs": str(tmp / f"{name}_out.pt")})
    r = subprocess.run([sys.executable, "-I", "-c", CHILD, json.dumps(cases)], cwd=tmp, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"loaded": []}
    got = {c["name"]: torch.load(c["outputs"], weights_only=True) for c in cases}
    return sources, expected, got


@pytest.mark.parametrize("name", sorted(CASES))
def test_monai_network_as_plain_torch(name, isolated_outputs):
    sources, expected, got = isolated_outputs
    assert _imports(sources[name]) == {"__future__", "torch"}
    assert len(expected[name]) == 3 and expected[name][1].shape[0] == 2  # three sizes, one with batch 2
    for want, out in zip(expected[name], got[name], strict=True):
        assert out.shape == want.shape
        torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def test_generated_source_reads_as_torch_nn_layers(isolated_outputs):
    sources, _, _ = isolated_outputs
    text = sources["unet_3d"]
    assert "class ExportedModel(nn.Module):" in text and "def forward(self, x):" in text
    assert '_attach(self, "net.model.0.conv.unit0.conv", nn.Conv3d(1, 4, 3, stride=(1, 2, 2), padding=1))' in text
    assert "monai" not in text.split('"""', 2)[2]  # only the docstring names the original class
    assert "torch.softmax" in sources["unet_2d"] and "torch.softmax" not in text  # segmentation only


def test_basic_unet_size_branches_are_noted(isolated_outputs):
    """BasicUNet pads on odd sizes: the branch valid sizes take is kept, and the file says so."""
    sources, _, _ = isolated_outputs
    assert "Size-dependent branches" in sources["basic_unet_2d"]


def test_swin_unetr_falls_back_to_importing_monai():
    entry = load_entry("nuclei_semseg_2d", SWIN)
    arch = architecture(entry)
    assert arch.requirements and arch.requirements[0].startswith("monai")
    assert "from monai.networks.nets import SwinUNETR" in arch.text
    assert arch.kwargs["softmax"] is True and arch.kwargs["network_kwargs"]["feature_size"] == 12
    assert arch.note and "could not be written as plain torch" in arch.note and "environment.yaml" in arch.note


def test_fnet_is_still_copied_verbatim():
    arch = architecture(load_entry("nuclei_semseg_2d", ["network.depth=2", "network.mult_chan=4"]))
    assert "class FNet" in arch.text and "class ExportedModel" in arch.text
    assert arch.kwargs["network_kwargs"]["depth"] == 2 and arch.note is None and arch.requirements == []


def test_python_kind_is_written_as_plain_torch_when_it_traces():
    entry = load_entry("nuclei_semseg_2d", ["network={kind: python, target: 'torch.nn:Conv2d', spatial_dims_arg: null, "
                                            "divisor: 1, kwargs: {kernel_size: 3, padding: 1}}"])
    arch = architecture(entry)
    assert arch.requirements == [] and arch.kwargs == {}
    assert '_attach(self, "net", nn.Conv2d(1, 2, 3, padding=1))' in arch.text


class _BakesSize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = (int(s) for s in x.shape[2:])  # sizes become Python ints: baked into a trace
        return nn.functional.interpolate(self.conv(x), size=(h, w))


class _BranchesOnValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.mean() > 0 else -x


class _RankMathAndOwnTensors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, 2)
        self.gain = nn.Parameter(torch.ones(2, 1, 1))
        self.register_buffer("offset", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, len(x.shape)))  # the rank is the same at every size
        y = self.norm(x) * self.gain + self.offset - x.mean(dim=dims, keepdim=True)
        return y / math.sqrt(x.shape[1])


def _inputs(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g) for s in shapes]


def test_a_baked_input_size_is_refused():
    with pytest.raises(NotTraceable, match="depends on the input size"):
        standalone_source(_BakesSize(), _inputs((1, 1, 8, 8), (2, 1, 12, 16)))


def test_a_branch_on_tensor_values_is_refused():
    with pytest.raises(NotTraceable, match="branches on the tensor values"):
        standalone_source(_BranchesOnValues(), _inputs((1, 1, 8, 8), (2, 1, 12, 16)))


def test_rank_math_and_own_tensors_are_written():
    """len(x.shape) is answered at trace time, math.sqrt is imported from math, and a parameter and
    a buffer of a traced-through module are recreated at their state-dict keys."""
    model = _perturbed(_RankMathAndOwnTensors())
    model.offset.fill_(0.5)
    xs = _inputs((1, 2, 8, 8), (2, 2, 12, 16), (1, 2, 4, 6))
    source = standalone_source(model, xs)
    assert "nn.GroupNorm(1, 2)" in source and "len(" not in source.split("def forward")[1]
    assert "import math\n" in source and "math_sqrt = math.sqrt" in source
    assert _imports(source) == {"__future__", "math", "torch"}
    assert '_tensor(self, "gain", (2, 1, 1), torch.float32, "parameter")' in source
    namespace: dict = {}
    exec(compile(source, "generated", "exec"), namespace)
    rebuilt = namespace["ExportedModel"]().eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    for x in xs:
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=1e-6)


def test_inference_wrapper_keys_are_kept():
    """The file is built for FCN.inference_model(): state dict keys start with `net.`."""
    model = InferenceModel(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()), softmax=True)
    source = standalone_source(model, _inputs((1, 1, 8, 8), (2, 1, 6, 10)))
    namespace: dict = {}
    exec(compile(source, "generated", "exec"), namespace)
    assert list(namespace["ExportedModel"]().state_dict()) == ["net.0.weight", "net.0.bias"]


def test_class_labels_subclass_keeps_the_generated_model_and_its_state_dict():
    """A segmentation package's architecture (a generated no-argument file here) gets the class labels
    as a subclass: the same state dict loads, and the second output is the argmax."""
    from mmv_zoo.export.architecture import LABELS_CALLABLE, Architecture, with_class_labels

    model = InferenceModel(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1)), softmax=True).eval()
    x = torch.randn(1, 1, 8, 8)
    arch = with_class_labels(Architecture(standalone_source(model, _inputs((1, 1, 8, 8), (2, 1, 6, 10))),
                                          "ExportedModel", {}))
    namespace: dict = {}
    exec(compile(arch.text, "generated", "exec"), namespace)
    rebuilt = namespace[arch.callable](**arch.kwargs).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    probabilities, labels = rebuilt(x)
    assert arch.callable == LABELS_CALLABLE
    torch.testing.assert_close(probabilities, model(x))
    assert torch.equal(labels, model(x).argmax(1, keepdim=True))


def test_architecture_file_is_the_one_the_package_checks(tmp_path):
    """The text written by the fx path is a valid module file on disk (what the export loads)."""
    entry = load_entry("denoise_3d_planaria", ["network.channels=[4,8,16]", "network.strides=[2,2]"])
    arch = architecture(entry)
    path = Path(tmp_path / "architecture.py")
    path.write_text(arch.text)
    compile(path.read_text(), str(path), "exec")
    assert "torch.fx" in arch.how and "needs only PyTorch" in arch.how
