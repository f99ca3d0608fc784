{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "rundmc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, prefixed with the
chart name unless it already contains it.
*/}}
{{- define "rundmc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "rundmc.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "rundmc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the agent's pods; they never change on upgrade. */}}
{{- define "rundmc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rundmc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Kubernetes' recommended labels, on every object. */}}
{{- define "rundmc.labels" -}}
{{ include "rundmc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/part-of: rundmc
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "rundmc.chart" . }}
{{- end }}

{{/* The ServiceAccount the agent runs as. */}}
{{- define "rundmc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rundmc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "rundmc.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The image store: images.store, or <paths.lib>/images. */}}
{{- define "rundmc.imageStore" -}}
{{- clean (.Values.images.store | default (printf "%s/images" (clean .Values.paths.lib))) }}
{{- end }}

{{/*
"true" when the host path .path is paths.lib or paths.run or below them:
the pod sees it through their Bidirectional mounts already, and a mount
under them would propagate back to the host.
*/}}
{{- define "rundmc.underAgentPaths" -}}
{{- $path := clean .path }}
{{- range list .root.Values.paths.lib .root.Values.paths.run }}
{{- $dir := clean . | trimSuffix "/" }}
{{- if or (eq $path (clean .)) (hasPrefix (printf "%s/" $dir) $path) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Host paths mounted at the same path besides the fixed ones, as a dict
path -> {readOnly, type}: hostPaths read-only, allowedHostPaths read-write (a
path in both is mounted once, read-write); the image store read-write when
outside paths.lib and paths.run; the registry credentials and CA files
read-only, unless the pod sees them already.
*/}}
{{- define "rundmc.extraHostPaths" -}}
{{- $paths := dict }}
{{- range .Values.hostPaths }}
{{- $_ := set $paths (clean .) (dict "readOnly" true "type" "") }}
{{- end }}
{{- range .Values.allowedHostPaths }}
{{- $_ := set $paths (clean .) (dict "readOnly" false "type" "") }}
{{- end }}
{{- $store := include "rundmc.imageStore" . }}
{{- if not (include "rundmc.underAgentPaths" (dict "root" . "path" $store)) }}
{{- $_ := set $paths $store (dict "readOnly" false "type" "DirectoryOrCreate") }}
{{- end }}
{{- $files := .Values.images.registryCAs }}
{{- with .Values.images.credentials }}
{{- $files = append $files . }}
{{- end }}
{{- range $files }}
{{- $file := clean . }}
{{- if not (or (hasKey $paths $file) (include "rundmc.underAgentPaths" (dict "root" $ "path" $file))) }}
{{- $_ := set $paths $file (dict "readOnly" true "type" "File") }}
{{- end }}
{{- end }}
{{- toJson $paths }}
{{- end }}

{{/* A volume name for a host path: "host-" and a short hash of the path. */}}
{{- define "rundmc.hostPathVolume" -}}
{{- printf "host-%s" (sha256sum . | trunc 10) }}
{{- end }}

{{/* The agent's command line, one argument per line as a YAML list. */}}
{{- define "rundmc.args" -}}
- agent
- --kube
- --node-name
- $(NODE_NAME)
- --manifests
- {{ .Values.paths.manifests | quote }}
- --depot
- {{ printf "%s/depot" (clean .Values.paths.lib) | quote }}
- --state-dir
- {{ clean .Values.paths.run | quote }}
- --runtime-root
- {{ printf "%s/runc" (clean .Values.paths.run) | quote }}
- --runtime
- {{ .Values.runtime | quote }}
- --resync-period
- {{ .Values.resyncPeriod | quote }}
- --workers
- {{ .Values.workers | quote }}
- --log-format
- {{ .Values.logFormat | quote }}
- --cgroup-parent
- {{ .Values.cgroupParent | quote }}
- --mirror-namespace
- {{ .Values.mirrorNamespace | quote }}
- --metrics-addr
- {{ include "rundmc.metricsAddr" . | quote }}
{{- if .Values.allowPrivileged }}
- --allow-privileged
{{- end }}
{{- if .Values.allowHostNetwork }}
- --allow-host-network
{{- end }}
{{- with .Values.allowedCapabilities }}
- --allowed-capabilities
- {{ join "," . | quote }}
{{- end }}
{{- with .Values.allowedUnsafeSysctls }}
- --allowed-unsafe-sysctls
- {{ join "," . | quote }}
{{- end }}
{{- if .Values.allowUnconfinedSeccomp }}
- --allow-unconfined-seccomp
{{- end }}
- --allowed-rootfs-paths
{{- $rootfs := list }}
{{- range (default (list (printf "%s/rootfs" (clean .Values.paths.lib))) .Values.allowedRootfsPaths) }}
{{- $rootfs = append $rootfs (clean .) }}
{{- end }}
- {{ join "," $rootfs | quote }}
{{- with .Values.allowedHostPaths }}
{{- $cleaned := list }}
{{- range . }}
{{- $cleaned = append $cleaned (clean .) }}
{{- end }}
- --allowed-host-paths
- {{ join "," $cleaned | quote }}
{{- end }}
- --image-store
- {{ include "rundmc.imageStore" . | quote }}
{{- with .Values.images.credentials }}
- --image-credentials
- {{ clean . | quote }}
{{- end }}
{{- range .Values.images.registryCAs }}
- --registry-ca
- {{ clean . | quote }}
{{- end }}
{{- range .Values.images.insecureRegistries }}
- --insecure-registry
- {{ . | quote }}
{{- end }}
{{- with .Values.images.allowedRegistries }}
- --allowed-registries
- {{ join "," . | quote }}
{{- end }}
- --image-gc-high-threshold
- {{ .Values.images.gcHighThresholdPercent | quote }}
- --image-gc-low-threshold
- {{ .Values.images.gcLowThresholdPercent | quote }}
{{- with .Values.waitForLock }}
- --wait-for-lock
- {{ . | quote }}
{{- end }}
{{- with .Values.remoteApi }}
{{- if .enabled }}
- --remote-api-listen
- {{ include "rundmc.hostPort" (list .bindAddress .port) | quote }}
- --remote-api-tls-cert
- "/etc/rundmc/remote-api/tls/tls.crt"
- --remote-api-tls-key
- "/etc/rundmc/remote-api/tls/tls.key"
{{- if .clientCASecret }}
- --remote-api-client-ca
- "/etc/rundmc/remote-api/client-ca/ca.crt"
{{- end }}
{{- range .tokenAudiences }}
- --remote-api-token-audience
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* host:port from (list host port), an IPv6 host in brackets. */}}
{{- define "rundmc.hostPort" -}}
{{- $host := index . 0 }}
{{- if contains ":" $host }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- printf "%s:%v" $host (index . 1) }}
{{- end }}

{{/* host:port for --metrics-addr, an IPv6 host in brackets. */}}
{{- define "rundmc.metricsAddr" -}}
{{- $host := .Values.metrics.bindAddress }}
{{- if contains ":" $host }}
{{- $host = printf "[%s]" $host }}
{{- end }}
{{- printf "%s:%v" $host .Values.metrics.port }}
{{- end }}
