"""The admission controllers, without a cluster: the policy-controller's ``policy-tester`` and
the Kyverno CLI evaluate exactly the files ``sigstead trust export`` writes, against images in a
loopback registry that ``snippets/cosign.sh`` signed and attested with cosign v2 and v3, in both
signature layouts. Every policy must admit the right signer's image with the expected builder's
provenance, and refuse an unsigned image, another identity, and another builder.

Also here: the generated Kubernetes objects validated strictly against the CRDs of the pinned
Kyverno and policy-controller modules, the Tekton Chains snippet against Chains' configuration
parser, and the entries Chains makes found by the auditor's digest search."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.trust.snippets import CHAINS_CHECKED
from tests.e2e.gocli import Cosign, Registry, registry, run, token_file
from tests.e2e.stack import IDENTITY, Stack, client_env, sigstead
from tests.gotools import module_dir, pinned_module, tool

pytestmark = pytest.mark.e2e

BUILDER = "https://ci.internal/builders/tekton"
EVIL_BUILDER = "https://evil.example/builder"
MALLORY = "mallory@example.com"


def provenance(builder: str) -> dict[str, Any]:
    """An SLSA v1 predicate shaped like Tekton Chains' (slsa/v2alpha4)."""
    return {
        "buildDefinition": {
            "buildType": "https://tekton.dev/chains/v2/slsa",
            "externalParameters": {"runSpec": {"pipelineRef": {"name": "build"}}},
            "internalParameters": {},
            "resolvedDependencies": [],
        },
        "runDetails": {"builder": {"id": builder}, "metadata": {"invocationID": "run-7"}},
    }


@dataclass
class World:
    """The export, and the images signed in each way, by name."""

    stack: Stack
    snippets: Path
    images: dict[str, str]
    home: Path


def _cosign_sh(
    stack: Stack, cosign: str, snippets: Path, work: Path, script: str, *, email: str = IDENTITY
) -> None:
    """Run ``script`` after sourcing the exported ``cosign.sh``, with ``cosign`` on PATH."""
    bindir = work / f"bin-{cosign}"
    if not bindir.exists():
        bindir.mkdir()
        (bindir / "cosign").symlink_to(tool(cosign))
    env = client_env(
        work / f"home-{cosign}",
        SIGSTEAD_ID_TOKEN=str(token_file(stack, work, email=email)),
        COSIGN_YES="true",
    )
    env["PATH"] = f"{bindir}:{env['PATH']}"
    done = subprocess.run(
        ["bash", "-c", f". {snippets / 'cosign.sh'} && {script}"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry(tmp_path_factory.mktemp("registry")) as r:
        yield r


@pytest.fixture(scope="module")
def world(stack: Stack, oci: Registry, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Export with the policy options a user gives, then sign images as the README says."""
    work = tmp_path_factory.mktemp("admission")
    out = work / "export"
    done = sigstead(
        "trust", "export", "--data-dir", str(stack.server.data_dir),
        "--public-url", stack.server.url, "--out", str(out),
        "--identity", IDENTITY, "--issuer", stack.idp.url,
        "--images", f"{oci.host}/*", "--builder-id", BUILDER,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    snippets = out / "snippets"
    good, evil = work / "good.json", work / "evil.json"
    good.write_text(json.dumps(provenance(BUILDER)))
    evil.write_text(json.dumps(provenance(EVIL_BUILDER)))

    # name: (cosign, signing functions, predicate, signer)
    plan = {
        "bundle-v3": ("cosign-v3", "", good, IDENTITY),
        "bundle-v2": ("cosign-v2", "", good, IDENTITY),
        "legacy-v3": ("cosign-v3", "_legacy", good, IDENTITY),
        "legacy-v2": ("cosign-v2", "_legacy", good, IDENTITY),
        "bundle-mallory": ("cosign-v3", "", good, MALLORY),
        "legacy-mallory": ("cosign-v2", "_legacy", good, MALLORY),
        "bundle-evil-builder": ("cosign-v3", "", evil, IDENTITY),
        "legacy-evil-builder": ("cosign-v2", "_legacy", evil, IDENTITY),
    }
    images = {}
    for name, (cosign, layout, predicate, email) in plan.items():
        image = oci.push_random_image(name, work)
        _cosign_sh(
            stack, cosign, snippets, work,
            f"sigstead_sign_image{layout} {image} && "
            f"sigstead_attest_image{layout} {image} {predicate}",
            email=email,
        )  # fmt: skip
        images[name] = image
    images["unsigned"] = oci.push_random_image("unsigned", work)
    return World(stack, snippets, images, work)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _split(world: World, name: str) -> dict[str, Path]:
    """Each document of an exported file in a file of its own, by kind (as ``kubectl apply``
    would create them one by one; policy-tester takes one object a file)."""
    out = {}
    for document in _documents(world.snippets / name):
        path = world.home / f"{name}.{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document))
        out[document["kind"]] = path
    return out


# --- policy-controller ------------------------------------------------------------------------

ADMITTED = ("bundle-v3", "bundle-v2")
REFUSED = {
    "unsigned": "no valid bundles exist in registry",
    "bundle-mallory": f'expected SAN value "{IDENTITY}", got "{MALLORY}"',
    "bundle-evil-builder": "predicate.runDetails.builder.id: conflicting values",
}
LEGACY_ADMITTED = ("legacy-v3", "legacy-v2")
LEGACY_REFUSED = {
    "unsigned": "no matching attestations",
    "legacy-mallory": f"none of the expected identities matched what was in the certificate, "
    f"got subjects [{MALLORY}]",
    "legacy-evil-builder": "predicate.runDetails.builder.id: conflicting values",
}


def policy_tester(world: World, policy: Path, trust_root: Path, image: str) -> tuple[bool, str]:
    done = run(
        tool("policy-tester"), world.home / "policy-tester",
        "-policy", str(policy), "-trustroot", str(trust_root), "-image", image,
    )  # fmt: skip
    errors = ""
    for line in done.stdout.splitlines():
        if line.startswith('{"errors"'):
            errors = "\n".join(json.loads(line)["errors"])
    return done.returncode == 0, errors or done.stderr[-2000:]


@pytest.mark.parametrize("trust_root", ["remote", "airgap"])
@pytest.mark.parametrize("image", [*ADMITTED, *REFUSED])
def test_policy_controller_bundles(world: World, trust_root: str, image: str) -> None:
    """policy-controller.yaml, with its TUF TrustRoot or the air-gap one, on bundles."""
    objects = _split(world, "policy-controller.yaml")
    root = objects["TrustRoot"]
    if trust_root == "airgap":
        root = _split(world, "policy-controller-airgap.yaml")["TrustRoot"]
    ok, errors = policy_tester(world, objects["ClusterImagePolicy"], root, world.images[image])
    if image in ADMITTED:
        assert ok, errors
    else:
        assert not ok
        assert REFUSED[image] in errors, errors


@pytest.mark.parametrize("image", [*LEGACY_ADMITTED, *LEGACY_REFUSED])
def test_policy_controller_legacy_layout(world: World, image: str) -> None:
    objects = _split(world, "policy-controller-legacy.yaml")
    ok, errors = policy_tester(
        world, objects["ClusterImagePolicy"], objects["TrustRoot"], world.images[image]
    )
    if image in LEGACY_ADMITTED:
        assert ok, errors
    else:
        assert not ok
        assert LEGACY_REFUSED[image] in errors, errors


# --- Kyverno ----------------------------------------------------------------------------------


def kyverno_apply(world: World, policy: Path, image: str) -> tuple[bool, str]:
    """``kyverno apply`` of ``policy`` to a Pod running ``image``, with registry access."""
    pod = world.home / f"pod-{abs(hash(image))}.yaml"
    pod.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "app", "namespace": "default"},
                "spec": {"containers": [{"name": "app", "image": image}]},
            }
        )
    )
    done = run(
        tool("kyverno"), world.home / "kyverno",
        "apply", str(policy), "--resource", str(pod), "--registry",
    )  # fmt: skip
    output = done.stdout + done.stderr
    summary = re.search(r"pass: (\d+), fail: (\d+), warn: \d+, error: (\d+)", output)
    assert summary, output
    passed, failed, errored = map(int, summary.groups())
    assert errored == 0, output
    return passed > 0 and failed == 0, output


@pytest.mark.parametrize(
    ("image", "message"),
    [
        *((name, None) for name in (*ADMITTED, *LEGACY_ADMITTED)),
        ("unsigned", "the image is not signed by the expected identity"),
        ("bundle-mallory", "the image is not signed by the expected identity"),
        ("legacy-mallory", "the image is not signed by the expected identity"),
        ("bundle-evil-builder", "the image's provenance names another builder"),
        ("legacy-evil-builder", "the image's provenance names another builder"),
    ],
)
def test_kyverno_image_validating_policy(world: World, image: str, message: str | None) -> None:
    """The ImageValidatingPolicy reads both layouts and trusts this sigstead through TUF."""
    policy = world.snippets / "kyverno-imagevalidatingpolicy.yaml"
    ok, output = kyverno_apply(world, policy, world.images[image])
    if message is None:
        assert ok, output
    else:
        assert not ok
        assert message in output, output


@pytest.mark.parametrize(
    ("image", "admitted"),
    [
        *((name, True) for name in LEGACY_ADMITTED),
        ("unsigned", False),
        ("legacy-mallory", False),
        ("legacy-evil-builder", False),
        # The ClusterPolicy reads .sig/.att tags only, as its header says.
        ("bundle-v3", False),
    ],
)
def test_kyverno_cluster_policy(world: World, image: str, admitted: bool) -> None:
    policy = world.snippets / "kyverno-clusterpolicy.yaml"
    ok, output = kyverno_apply(world, policy, world.images[image])
    assert ok is admitted, output
    if not admitted:
        assert "sigstead-signature-and-slsa-provenance" in output, output


# --- the objects against the real CRDs --------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as a JSON Schema in which unknown fields are errors, as the API
    server's strict field validation (``kubectl apply --validate=strict``) makes them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def _crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) → schema, from the CRDs in the pinned modules' config directories."""
    schemas = {}
    files = [
        *(pinned_module("kyverno") / "config" / "crds").rglob("*.yaml"),
        *(pinned_module("policy-tester") / "config").glob("300-*.yaml"),
    ]
    for path in files:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schema = copy.deepcopy(schema)
                # Every object has these, whether its CRD lists them or not.
                schema.setdefault("properties", {}).update(
                    apiVersion={"type": "string"}, kind={"type": "string"}, metadata={}
                )
                schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


POLICY_FILES = (
    "kyverno-imagevalidatingpolicy.yaml",
    "kyverno-clusterpolicy.yaml",
    "policy-controller.yaml",
    "policy-controller-legacy.yaml",
    "policy-controller-airgap.yaml",
)


def test_every_object_is_valid_against_its_crd(world: World) -> None:
    schemas = _crd_schemas()
    checked = []
    for name in POLICY_FILES:
        for document in _documents(world.snippets / name):
            key = (document["apiVersion"], document["kind"])
            assert key in schemas, f"{name}: no CRD for {key}"
            jsonschema.validate(document, schemas[key])
            # And the check has teeth: a misspelt field is an error.
            broken = copy.deepcopy(document)
            broken["spec"]["signatureFormats"] = "bundle"
            with pytest.raises(jsonschema.ValidationError, match="signatureFormats"):
                jsonschema.validate(broken, schemas[key])
            checked.append(key)
    assert len(checked) == 7, checked


# --- Tekton Chains ----------------------------------------------------------------------------


def _chains_options() -> dict[str, tuple[str, ...]]:
    """Each configuration key Chains parses → the values it accepts (empty: any string), read
    from pkg/config/config.go of the release the snippet was checked against."""
    source = (
        module_dir("github.com/tektoncd/chains", CHAINS_CHECKED) / "pkg" / "config" / "config.go"
    ).read_text()
    constants = dict(re.findall(r"^\s*(\w+)\s*=\s*\"([^\"]+)\"", source, re.MULTILINE))
    options: dict[str, tuple[str, ...]] = {}
    for kind, constant, rest in re.findall(
        r"\b(asString|asStringSet|asBool|oneOf|asDuration)\((\w+),\s*&[\w.]+(.*)\)", source
    ):
        values = tuple(re.findall(r"\"([^\"]*)\"", rest))
        if kind == "asBool":
            values = ("true", "false")
        key = constants[constant]
        options[key] = tuple(sorted({*options.get(key, ()), *values}))
    return options


def test_tekton_chains_snippet_uses_only_keys_chains_parses(world: World) -> None:
    options = _chains_options()
    assert "artifacts.taskrun.format" in options, "the parser found nothing: config.go changed"
    (config_map,) = _documents(world.snippets / "tekton-chains.yaml")
    for key, value in config_map["data"].items():
        assert key in options, f"Chains {CHAINS_CHECKED} has no configuration key {key}"
        if options[key]:
            assert value in options[key], f"{key}: {value!r} is not one of {options[key]}"
    assert config_map["data"]["builder.id"] == BUILDER
    # SLSA v1.0 provenance: the predicate type both admission policies require.
    assert config_map["data"]["artifacts.taskrun.format"] == "slsa/v2alpha4"


def test_the_entries_chains_makes_are_found_by_digest(
    world: World, oci: Registry, tmp_path: Path
) -> None:
    """Chains attests through cosign's library with the transparency log on, in the `.att`
    layout and an ``intoto`` entry; cosign v3 attests as a bundle with a ``dsse`` entry. The
    auditor's query from the seeds, ``sigstead log search --sha256 <image digest>``, finds both
    (the in-toto subject is the image), verified against the log key."""
    stack = world.stack
    image = oci.push_random_image("chains", tmp_path)
    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps(provenance(BUILDER)))
    url = stack.server.url
    chains = Cosign("cosign-v2", tool("cosign-v2"), tmp_path / "v2", stack)
    chains.initialize()
    done = chains(
        "attest", "--fulcio-url", url, "--rekor-url", url, "--tlog-upload=true",
        "--rekor-entry-type", "intoto", "--identity-token", str(token_file(stack, tmp_path)),
        "--type", "slsaprovenance1", "--predicate", str(predicate), image,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _cosign_sh(
        stack, "cosign-v3", world.snippets, tmp_path,
        f"sigstead_attest_image {image} {predicate}",
    )  # fmt: skip

    digest = image.split("@sha256:")[1]
    found = sigstead(
        "log", "--url", url, "--state-dir", str(tmp_path / "state"),
        "--log-key", str(world.snippets / "pem" / "rekor.pub"), "--json",
        "search", "--sha256", digest,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    entries = json.loads(found.stdout)
    assert sorted(entry["kind"] for entry in entries) == ["dsse", "intoto"], entries


def test_cosign_sh_selects_flags_by_cosign_version(world: World) -> None:
    """The same cosign.sh verifies with both major versions (v2 needs --new-bundle-format)."""
    for cosign in ("cosign-v2", "cosign-v3"):
        c = Cosign(cosign, tool(cosign), world.home / f"home-{cosign}", world.stack)
        image = world.images["bundle-v3"]
        _cosign_sh(
            world.stack, c.name, world.snippets, world.home,
            f"sigstead_verify_image {image} >/dev/null && "
            f"sigstead_verify_attestation {image} >/dev/null",
        )  # fmt: skip
