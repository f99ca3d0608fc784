#!/usr/bin/env python3
"""Lint and render the rundmc Helm chart with Helm's own library, offline.

Uses helm-python-sdk (PyPI), which binds Helm v4's Go SDK; no helm binary
and no cluster are needed. tests/chart.rs drives this script.

    helm_chart.py lint CHART [VALUES...] [--kube-version v1.24.0]
    helm_chart.py template CHART [VALUES...] [--name N] [--namespace NS] [--kube-version V]
    helm_chart.py notes CHART [VALUES...] [--name N] [--namespace NS] [--kube-version V]
    helm_chart.py deploy CHART      # manifests/deploy/rundmc.yaml, to stdout

VALUES are Helm's own flags: --set k=v, --set-string k=v, --set-json k=JSON,
-f/--values FILE, applied in helm's order (see parse_values).

`template` is what `helm template` prints: Helm's install action in
client-only dry-run mode, which sorts objects in Helm's install order.
--kube-version sets .Capabilities.KubeVersion as `helm template
--kube-version` does (default: the Kubernetes version Helm's library was
built against); the chart's CRD depends on it.
Exit status: 0 done, 1 Helm reported a problem (on stderr), 2 bad usage,
3 helm-python-sdk is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

try:
    import helm_python as helm
except ImportError:
    sys.stderr.write(
        "helm_chart.py: the Python module helm_python is missing: "
        "pip install helm-python-sdk (scripts/deps.sh installs it)\n"
    )
    sys.exit(3)

# The release the plain deploy YAML is rendered as, for the oldest
# Kubernetes the chart supports, so that every supported server accepts it.
DEPLOY_RELEASE = "rundmc"
DEPLOY_NAMESPACE = "rundmc-system"
DEPLOY_KUBE_VERSION = "v1.24.0"

# Lint severities from Helm's support package: 1 info, 2 warning, 3 error.
WARNING = 2

DEPLOY_HEADER = """\
# rundmc, cluster-wide: its namespace, the Container CRD, RBAC, the agent
# DaemonSet and its metrics Service. Generated from charts/rundmc with its
# default values for Kubernetes 1.24 by `scripts/helm_chart.py deploy
# charts/rundmc`; do not edit (tests/chart.rs fails when this file differs
# from the chart's render). It installs on every Kubernetes from 1.24:
#
#   kubectl apply --server-side -f manifests/deploy/rundmc.yaml
#
# On 1.31 and later, let the API server filter Containers by node: apply the
# CRD with selectableFields over it, then restart the agents (each decides
# where to filter when it starts):
#
#   kubectl apply --server-side -f crds/container-1.31.yaml
#   kubectl -n rundmc-system rollout restart daemonset/rundmc
"""

# Not part of the chart (Helm charts leave namespaces to `--create-namespace`).
# The agent pod is privileged with host PID and host paths, which Pod Security
# admission allows only at the privileged level.
DEPLOY_NAMESPACE_DOC = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {DEPLOY_NAMESPACE}
  labels:
    app.kubernetes.io/part-of: rundmc
    pod-security.kubernetes.io/enforce: privileged
"""


class ValuesAction(argparse.Action):
    """Collects --set/--set-string/--set-json/--values flags by kind."""

    def __call__(self, parser, namespace, value, option_string=None):
        kind = "--values" if option_string == "-f" else option_string
        namespace.values_flags.setdefault(kind, []).append(value)


def merge(into: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge overrides into `into`: maps merge, anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def parse_values(flags: dict[str, list[str]]) -> dict[str, Any]:
    """The user values the flags give, in helm's order: values files, then
    --set-json, --set, --set-string. All --set flags are parsed as one
    comma-joined expression, which is what helm's repeated strvals.ParseInto
    into one map amounts to (list items merge by index); the groups are
    deep-merged over each other.
    """
    values: dict[str, Any] = {}
    for path in flags.get("--values", []):
        with open(path, encoding="utf-8") as file:
            merge(values, helm.values_from_yaml(file.read()))
    for expression in flags.get("--set-json", []):
        merge(values, helm.parse_set_json(expression))
    if "--set" in flags:
        merge(values, helm.parse_set_string(",".join(flags["--set"])))
    if "--set-string" in flags:
        merge(values, helm.parse_set_string_values(",".join(flags["--set-string"])))
    return values


def render(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """Helm's client-only dry-run install: the release with its manifest."""
    config = helm.Config(storage_driver="memory", namespace=args.namespace)
    try:
        if args.kube_version is None:
            return config.install(
                args.chart, args.name, values, namespace=args.namespace, dry_run="client"
            )
        return install_at(config, args, values)
    finally:
        config.close()


def install_at(config: Any, args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """`render` with .Capabilities.KubeVersion set to args.kube_version.

    helm-python-sdk 0.2.2's Config.install does not pass `kube_version`,
    which the install options of its C library take (Helm's own
    `KubeVersion` of the install action, as `helm template --kube-version`
    sets it); so this makes the same library call Config.install makes,
    with that option added.
    """
    from helm_python import _native  # pylint: disable=import-outside-toplevel

    options = {
        "namespace": args.namespace,
        "dry_run": "client",
        "kube_version": args.kube_version,
    }
    payload = _native.call_string(
        "helm_install",
        config._raw(),  # pylint: disable=protected-access
        _native.HANDLE(0),
        _native.HANDLE(0),
        args.chart,
        args.name,
        json.dumps(values),
        json.dumps(options),
    )
    return json.loads(payload)


def crd_documents(chart_path: str) -> list[str]:
    """The chart's crds/ files, as Helm installs them, each one document."""
    with helm.Chart.load(chart_path) as chart:
        crds = sorted(chart.crds, key=lambda crd: crd["filename"])
    return [f"# Source: {crd['filename']}\n{crd['data'].strip()}\n" for crd in crds]


def documents(manifest: str) -> str:
    """Helm's manifest stream, normalised to end in one newline."""
    return manifest.strip() + "\n"


def cmd_lint(args: argparse.Namespace, values: dict[str, Any]) -> int:
    report = helm.lint(args.chart, values, strict=True, kube_version=args.kube_version)
    bad = 0
    for message in report["messages"]:
        severity = message["severity"]
        label = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(severity, "UNKNOWN")
        sys.stderr.write(f"[{label}] {message['path']}: {message['error']}\n")
        bad += severity >= WARNING
    for error in report["errors"]:
        sys.stderr.write(f"[ERROR] {error}\n")
        bad += 1
    print(f"{report['total_charts_linted']} chart(s) linted, {bad} problem(s)")
    return 1 if bad else 0


def cmd_template(args: argparse.Namespace, values: dict[str, Any]) -> int:
    manifest = documents(render(args, values)["manifest"])
    if args.include_crds:
        manifest = "".join(f"---\n{doc}" for doc in crd_documents(args.chart)) + manifest
    sys.stdout.write(manifest)
    return 0


def cmd_notes(args: argparse.Namespace, values: dict[str, Any]) -> int:
    sys.stdout.write(render(args, values)["notes"])
    return 0


def cmd_deploy(args: argparse.Namespace, values: dict[str, Any]) -> int:
    if (
        values
        or args.name != DEPLOY_RELEASE
        or args.namespace != DEPLOY_NAMESPACE
        or args.kube_version is not None
    ):
        sys.stderr.write("helm_chart.py deploy: renders the default values only\n")
        return 2
    args.kube_version = DEPLOY_KUBE_VERSION
    parts = [DEPLOY_HEADER, "---\n", DEPLOY_NAMESPACE_DOC]
    parts += [f"---\n{doc}" for doc in crd_documents(args.chart)]
    parts.append(documents(render(args, values)["manifest"]))
    sys.stdout.write("".join(parts))
    return 0


COMMANDS = {"lint": cmd_lint, "template": cmd_template, "notes": cmd_notes, "deploy": cmd_deploy}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Lint and render a Helm chart with Helm's library (helm-python-sdk)."
    )
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("chart", help="chart directory")
    p.set_defaults(values_flags={})
    for flag in ("--set", "--set-string", "--set-json"):
        p.add_argument(flag, action=ValuesAction, metavar="K=V", help="as helm's " + flag)
    p.add_argument("-f", "--values", action=ValuesAction, metavar="FILE", help="a values file")
    p.add_argument("--name", default=DEPLOY_RELEASE, help="release name")
    p.add_argument("--namespace", default=DEPLOY_NAMESPACE, help="release namespace")
    p.add_argument("--include-crds", action="store_true", help="template: crds/ first")
    p.add_argument(
        "--kube-version",
        help="the Kubernetes version to lint against, or to render for (.Capabilities.KubeVersion)",
    )
    return p


def main() -> int:
    args = parser().parse_args()
    try:
        values = parse_values(args.values_flags)
        return COMMANDS[args.command](args, values)
    except (helm.HelmError, OSError) as error:
        sys.stderr.write(f"helm_chart.py {args.command}: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
