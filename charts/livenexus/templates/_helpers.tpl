{{/* Names and labels shared by every template. */}}

{{- define "livenexus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "livenexus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "livenexus.operatorName" -}}
{{- printf "%s-operator" (include "livenexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "livenexus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "livenexus.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "livenexus.workerTemplateName" -}}
{{- printf "%s-worker-template" (include "livenexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "livenexus.leaseName" -}}
{{- default (include "livenexus.operatorName" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "livenexus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: livenexus
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "livenexus.operatorSelectorLabels" -}}
app.kubernetes.io/name: livenexus-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "livenexus.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The web console (templates/console-*.yaml). */}}

{{- define "livenexus.consoleName" -}}
{{- printf "%s-console" (include "livenexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "livenexus.consoleSelectorLabels" -}}
app.kubernetes.io/name: livenexus-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "livenexus.consoleServiceAccountName" -}}
{{- if .Values.console.serviceAccount.create -}}
{{- default (include "livenexus.consoleName" .) .Values.console.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.console.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image (it carries the console) unless console.image.repository names another one. */}}
{{- define "livenexus.consoleImage" -}}
{{- $c := .Values.console.image -}}
{{- $op := .Values.operator.image -}}
{{- if $c.repository -}}
{{- include "livenexus.image" (dict "root" . "image" $c) -}}
{{- else -}}
{{- include "livenexus.image" (dict "root" . "image" (dict "repository" $op.repository "tag" (default $op.tag $c.tag))) -}}
{{- end -}}
{{- end -}}

{{/*
Where the console's rooms come from: "static" (console.rooms.static, no Kubernetes API access), "cluster"
(TranscriptionRooms of every namespace) or "namespace" (TranscriptionRooms of consoleRoomsNamespace).
*/}}
{{- define "livenexus.consoleRoomsMode" -}}
{{- $r := .Values.console.rooms -}}
{{- if $r.static -}}
{{- if or $r.allNamespaces $r.namespace -}}
{{- fail "console.rooms.static is a fixed room list: leave console.rooms.namespace and console.rooms.allNamespaces unset with it" -}}
{{- end -}}
static
{{- else if $r.allNamespaces -}}
{{- if $r.namespace -}}
{{- fail "console.rooms.allNamespaces lists every namespace: leave console.rooms.namespace unset with it" -}}
{{- end -}}
cluster
{{- else -}}
namespace
{{- end -}}
{{- end -}}

{{- define "livenexus.consoleRoomsNamespace" -}}
{{- default .Release.Namespace .Values.console.rooms.namespace -}}
{{- end -}}

{{/*
"true" when TranscriptionPolicies are configured (a LiveKit URL and the Secret with its webhook key), else "".
*/}}
{{- define "livenexus.policiesEnabled" -}}
{{- $pol := .Values.operator.policies | default dict -}}
{{- $lk := $pol.livekit | default dict -}}
{{- if and $lk.url ($lk.credentialsSecret | default dict).name -}}true{{- end -}}
{{- end }}

{{- define "livenexus.webhookName" -}}
{{- printf "%s-webhook" (include "livenexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end }}
