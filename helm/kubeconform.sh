#!/usr/bin/env bash
# kubeconform, offline: Kubernetes schemas from the `kubernetes-validate` PyPI package
# (see schemas/localize.py) and the vendored CRD schemas in schemas/{group}/.
#
# Usage: helm template ... | helm/kubeconform.sh     or     helm/kubeconform.sh FILE...
# Env:   KUBE_VERSIONS (default "1.29.0 1.33.0"), PYTHON, AUTHGATE_SCHEMA_CACHE
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "${here}")"
export PATH="${GOBIN:-${GOPATH:-${HOME}/go}/bin}:${PATH}"
python="${PYTHON:-${repo}/.venv/bin/python}"
[[ -x "${python}" ]] || python=python3
cache="${AUTHGATE_SCHEMA_CACHE:-${TMPDIR:-/tmp}/authgate-kube-schemas}"
read -r -a versions <<<"${KUBE_VERSIONS:-1.29.0 1.33.0}"

"${python}" "${here}/schemas/localize.py" "${cache}" "${versions[@]}" >&2

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
  manifest="$(mktemp --suffix=.yaml)"
  trap 'rm -f "${manifest}"' EXIT
  cat >"${manifest}"
  files=("${manifest}")
fi

status=0
for version in "${versions[@]}"; do
  echo "kubeconform: Kubernetes ${version}"
  result=0
  output="$(kubeconform -strict -summary -kubernetes-version "${version}" \
    -schema-location "${cache}/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "${here}/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "${files[@]}")" || result=$?
  echo "${output}"
  # Nothing validated is a failure too (an empty rendering, a file kubeconform skipped).
  if [[ ${result} -ne 0 || "${output}" == *"Summary: 0 resource"* ]]; then
    status=1
  fi
done
exit "${status}"
