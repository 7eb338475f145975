{{/* Names, labels and the values every template derives the same way. */}}

{{- define "mendel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mendel.fullname" -}}
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

{{- define "mendel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mendel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mendel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mendel.labels" -}}
helm.sh/chart: {{ include "mendel.chart" . }}
{{ include "mendel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mendel
{{- end }}

{{/* The CRDs already carry app.kubernetes.io/name and part-of from the generator. */}}
{{- define "mendel.crdLabels" -}}
helm.sh/chart: {{ include "mendel.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mendel.crdAnnotations" -}}
{{- if .Values.crds.keep -}}
helm.sh/resource-policy: keep
{{- else -}}
{}
{{- end }}
{{- end }}

{{- define "mendel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mendel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Watched namespaces, one per line; the release namespace when the list is empty. */}}
{{- define "mendel.namespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) }}
{{- range ($namespaces | uniq) }}
{{ . }}
{{- end }}
{{- end }}

{{- define "mendel.workerServiceAccountName" -}}
{{- if .Values.workers.serviceAccount.name }}
{{- .Values.workers.serviceAccount.name }}
{{- else if not .Values.watch.allNamespaces }}
{{- "mendel-worker" }}
{{- end }}
{{- end }}

{{- define "mendel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mendel.workerImage" -}}
{{- printf "%s:%s" .Values.workers.image.repository (default .Chart.AppVersion .Values.workers.image.tag) }}
{{- end }}

{{- define "mendel.mlflowName" -}}
{{- printf "%s-mlflow" (include "mendel.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mendel.mlflowSelectorLabels" -}}
app.kubernetes.io/name: mlflow
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's tracking URI: tracking.uri, else the bundled server's Service. */}}
{{- define "mendel.trackingUri" -}}
{{- if .Values.tracking.uri }}
{{- .Values.tracking.uri }}
{{- else if .Values.mlflow.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "mendel.mlflowName" .) .Release.Namespace (int .Values.mlflow.port) }}
{{- end }}
{{- end }}

{{/* The allow-list: tracking.allowedUris plus the tracking URI, one per line, no repeats. */}}
{{- define "mendel.allowedTrackingUris" -}}
{{- $uris := .Values.tracking.allowedUris }}
{{- $uri := include "mendel.trackingUri" . }}
{{- if $uri }}{{ $uris = append $uris $uri }}{{ end }}
{{- range ($uris | uniq) }}
{{ . }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security Standard, shared by every Pod of the chart. */}}
{{- define "mendel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mendel.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Plain env of the operator, also given to the test Pods (e.g. KUBERNETES_SERVICE_HOST). */}}
{{- define "mendel.plainEnv" -}}
{{- range .Values.env }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/* The operator's RBAC rules, the same in a Role and in the ClusterRole (docs/install.md). */}}
{{- define "mendel.rules" -}}
- apiGroups: [mendel.dev]
  resources: [qdevolutions, experiencelibraries, compressortrainings]
  verbs: [get, list, watch, patch]
- apiGroups: [mendel.dev]
  resources: [qdevolutions/status, experiencelibraries/status, compressortrainings/status]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Spec snapshots (created once) and each ExperienceLibrary's published library (read by
# name to check who owns it, then created or updated).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update]
# The headless rendezvous Service of a multi-node CompressorTraining.
- apiGroups: [""]
  resources: [services]
  verbs: [create]
# Kopf posts Events on the resources it handles; the operator lists a Job's Warning Events
# when the Job has no Pod, to report why (FailedCreate).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-wide only: Kopf watches CRDs to notice the kinds being (re)installed. */}}
{{- define "mendel.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
