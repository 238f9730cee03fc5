"""The Go text/template subset, on Fulcio's public ci-provider templates."""

from __future__ import annotations

import pytest

from services.ca.template import TemplateError, parse_template

GITHUB = {
    "url": "https://github.com",
    "repository": "octo/hello",
    "run_id": "42",
    "run_attempt": "1",
    "job_workflow_ref": "octo/hello/.github/workflows/r.yml@refs/heads/main",
}


@pytest.mark.parametrize(
    ("source", "data", "want"),
    [
        (
            "{{ .url }}/{{ .job_workflow_ref }}",
            GITHUB,
            f"https://github.com/{GITHUB['job_workflow_ref']}",
        ),
        (
            "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}",
            GITHUB,
            "https://github.com/octo/hello/actions/runs/42/attempts/1",
        ),
        (
            'refs/{{if eq .ref_type "branch"}}heads/{{ else }}tags/{{end}}{{ .ref }}',
            {"ref_type": "branch", "ref": "main"},
            "refs/heads/main",
        ),
        (
            'refs/{{if eq .ref_type "branch"}}heads/{{ else }}tags/{{end}}{{ .ref }}',
            {"ref_type": "tag", "ref": "v1"},
            "refs/tags/v1",
        ),
        (
            '{{.api_url}}/projects/{{(index . "oidc.circleci.com/project-id")}}/x',
            {"api_url": "https://circleci.com/api/v2", "oidc.circleci.com/project-id": "p-1"},
            "https://circleci.com/api/v2/projects/p-1/x",
        ),
        # Fulcio's public CircleCI template really renders two quote characters in its else branch.
        (
            '{{if eq (index . "oidc.circleci.com/ssh-rerun") "true"}}ssh-rerun{{ else }}""{{end}}',
            {"oidc.circleci.com/ssh-rerun": "false"},
            '""',
        ),
        (
            '{{if eq (index . "oidc.circleci.com/ssh-rerun") "true"}}ssh-rerun{{ else }}""{{end}}',
            {"oidc.circleci.com/ssh-rerun": "true"},
            "ssh-rerun",
        ),
        ('{{ index . "missing" }}', {}, ""),  # index on a Go map yields the zero value
        ("{{ if .e }}env={{ .e }}{{ end }}", {"e": ""}, ""),
        ("{{ if .e }}env={{ .e }}{{ end }}", {"e": "prod"}, "env=prod"),
        ('{{ if eq .a "x" "y" }}yes{{ end }}', {"a": "y"}, "yes"),  # eq: any of the others
        ('{{ if ne .a "x" }}no{{ end }}', {"a": "y"}, "no"),
        ("{{ if not .a }}empty{{ end }}", {"a": ""}, "empty"),
        ("a  {{- .x -}}  b", {"x": "X"}, "aXb"),
        ('{{ `raw` }}-{{ "q\\"t" }}', {}, 'raw-q"t'),
        ("plain text", {}, "plain text"),
        ("{{ eq .a .b }}", {"a": "1", "b": "2"}, "false"),
    ],
)
def test_render(source: str, data: dict[str, str], want: str) -> None:
    assert parse_template(source).render(data) == want


def test_missing_field_is_an_error() -> None:
    template = parse_template("{{ .url }}/{{ .job_workflow_ref }}")
    with pytest.raises(TemplateError, match='no entry for key "job_workflow_ref"'):
        template.render({"url": "https://github.com"})


@pytest.mark.parametrize(
    "source",
    [
        "{{ .a.b }}",
        "{{ range .a }}{{ end }}",
        "{{ $x := .a }}",
        "{{ .a | printf }}",
        "{{ printf .a }}",
        "{{ if .a }}",
        "{{ end }}",
        "{{ else }}",
        "{{ if .a }}{{ else if .b }}{{ end }}",
        "{{ .a",
        "{{ index . }}",
        '{{ (index . "a" }}',
        '{{ "bad \\q escape" }}',
        "{{/* comment */}}",
    ],
)
def test_unsupported_syntax_is_refused(source: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(source)
