{{/* Names and labels. */}}
{{- define "authgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "authgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "authgate.redisName" -}}
{{- printf "%s-redis" (include "authgate.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "authgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of authgate's pods (never matches the in-chart Redis). */}}
{{- define "authgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: authgate
{{- end }}

{{- define "authgate.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "authgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "authgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "authgate.prefix" -}}
{{- .Values.config.prefix | default "/_authgate" }}
{{- end }}

{{/* The Secret holding environment variables, if any. */}}
{{- define "authgate.envSecretName" -}}
{{- if .Values.secretEnv.existingSecret }}
{{- .Values.secretEnv.existingSecret }}
{{- else if .Values.secretEnv.values }}
{{- printf "%s-env" (include "authgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret mounted at /etc/authgate/keys, if any. */}}
{{- define "authgate.keysSecretName" -}}
{{- if .Values.keys.existingSecret }}
{{- .Values.keys.existingSecret }}
{{- else if .Values.keys.files }}
{{- printf "%s-keys" (include "authgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret holding the assertion signing key, if the chart mounts one. */}}
{{- define "authgate.assertionKeySecretName" -}}
{{- if .Values.assertionKey.existingSecret }}
{{- .Values.assertionKey.existingSecret }}
{{- else if .Values.assertionKey.create }}
{{- printf "%s-assertion-key" (include "authgate.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Every value the chart cannot default, checked at install/template time and reported in one
message. The schema allows the empty defaults so that `helm lint` passes on them (helm's
lint mode turns `fail` into an INFO line); `helm install` and `helm template` stop here.
*/}}
{{- define "authgate.checkRequired" -}}
{{- $problems := list }}
{{- if not .Values.config.public_url }}
{{- $problems = append $problems "config.public_url: set the browser-facing URL, e.g. https://app.example.com" }}
{{- end }}
{{- if and (ne .Values.mode "sidecar") (not (dig "upstream" "url" "" .Values.config)) }}
{{- $problems = append $problems "config.upstream.url: standalone mode needs the protected application's URL, e.g. http://app.web.svc.cluster.local:8080 (or set mode=sidecar)" }}
{{- end }}
{{- $r := .Values.redis }}
{{- $chosen := list }}
{{- if $r.enabled }}{{ $chosen = append $chosen "redis.enabled" }}{{ end }}
{{- if $r.url }}{{ $chosen = append $chosen "redis.url" }}{{ end }}
{{- if $r.sentinel.master }}{{ $chosen = append $chosen "redis.sentinel" }}{{ end }}
{{- if ne (len $chosen) 1 }}
{{- $problems = append $problems (printf "redis: set exactly one of redis.url (external Redis), redis.sentinel.master with redis.sentinel.nodes (Sentinel), or redis.enabled=true (in-chart Redis for trials); found %s" (default "none" (join ", " $chosen))) }}
{{- else if and $r.sentinel.master (not $r.sentinel.nodes) }}
{{- $problems = append $problems "redis.sentinel.nodes: list the sentinels as host:port" }}
{{- end }}
{{- if $problems }}
{{- fail (printf "\n\nauthgate: required values are missing (see the chart README):\n  - %s\n" (join "\n  - " $problems)) }}
{{- end }}
{{- end }}

{{/* session.redis of authgate.yaml: the one Redis topology authgate.checkRequired allowed. */}}
{{- define "authgate.redis" -}}
{{- $r := .Values.redis }}
{{- $out := dict "key_prefix" $r.keyPrefix }}
{{- if $r.enabled }}
{{- $_ := set $out "url" (printf "redis://%s:6379/0" (include "authgate.redisName" .)) }}
{{- else if $r.url }}
{{- $_ := set $out "url" $r.url }}
{{- else }}
{{- $sentinel := dict "master" $r.sentinel.master "nodes" $r.sentinel.nodes }}
{{- if $r.sentinel.password }}{{ $_ := set $sentinel "password" $r.sentinel.password }}{{ end }}
{{- if $r.sentinel.sentinelPassword }}{{ $_ := set $sentinel "sentinel_password" $r.sentinel.sentinelPassword }}{{ end }}
{{- $_ := set $out "sentinel" $sentinel }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* authgate.yaml: the user's config with the keys the chart owns set. */}}
{{- define "authgate.config" -}}
{{- include "authgate.checkRequired" . }}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.port)) }}
{{- $_ := set $cfg "metrics" (dict "enabled" .Values.metrics.enabled "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) }}
{{- $upstream := deepCopy (default dict $cfg.upstream) }}
{{- if eq .Values.mode "sidecar" }}
{{- $_ := set $upstream "url" (printf "http://127.0.0.1:%d" (int .Values.app.port)) }}
{{- end }}
{{- $_ := set $cfg "upstream" $upstream }}
{{- $session := deepCopy (default dict $cfg.session) }}
{{- $_ := set $session "store" "redis" }}
{{- $_ := set $session "redis" (include "authgate.redis" . | fromYaml) }}
{{- $_ := set $cfg "session" $session }}
{{- if include "authgate.assertionKeySecretName" . }}
{{- $headers := deepCopy (default dict $cfg.headers) }}
{{- $assertion := deepCopy (default dict $headers.assertion) }}
{{- $_ := set $assertion "key_file" "/etc/authgate/assertion/assertion-key.pem" }}
{{- $_ := set $headers "assertion" $assertion }}
{{- $_ := set $cfg "headers" $headers }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
