#!/usr/bin/env python3
"""`helm lint --strict` and `helm template` with Helm's own SDK (PyPI helm-python-sdk),
for machines without a helm binary: the tests lint and render the chart with it.

    helm.py lint CHART [-f VALUES]...
    helm.py template CHART [-f VALUES]... [--name NAME] [--namespace NS] [--include-crds]

Exit status 1 with one line per problem when the chart, the values or a template is wrong.
"""
import argparse
import sys

import helm_python

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def values_of(files):
    """The values files merged left to right, as `helm -f a -f b` does."""
    merged = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            merged = deep_merge(merged, helm_python.values_from_yaml(f.read()) or {})
    return merged


def deep_merge(base, override):
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def lint(args):
    report = helm_python.lint(args.chart, values_of(args.values), strict=True, namespace=args.namespace)
    failed = bool(report.get("errors"))
    for message in report.get("messages") or []:
        severity = message.get("severity", 0)
        print(f"[{SEVERITY.get(severity, severity)}] {message.get('path')}: {message.get('error')}")
        failed |= severity >= 2
    for error in report.get("errors") or []:
        print(f"[ERROR] {error}")
    print(f"{report.get('total_charts_linted', 0)} chart(s) linted, {'failed' if failed else 'no failures'}")
    return 1 if failed else 0


def template(args):
    chart = helm_python.Chart.load(args.chart)
    values = values_of(args.values)
    chart.validate_schema(values)
    out = []
    if args.include_crds:
        for crd in chart.crds:
            out.append(f"---\n# Source: {crd['filename']}\n{crd['data'].strip()}\n")
    rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    for path in sorted(rendered):
        body = rendered[path].strip()
        # Helpers and templates whose conditions are off render nothing but comments.
        if path.endswith(".tpl") or not any(
            line.strip() and not line.lstrip().startswith("#") for line in body.splitlines()
        ):
            continue
        out.append(f"---\n# Source: {path}\n{body}\n")
    sys.stdout.write("".join(out))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["lint", "template"])
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--name", default="cilium")
    parser.add_argument("--namespace", default="kube-system")
    parser.add_argument("--include-crds", action="store_true")
    args = parser.parse_args()
    try:
        return {"lint": lint, "template": template}[args.command](args)
    except helm_python.HelmError as e:
        print(f"helm {args.command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"helm {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
