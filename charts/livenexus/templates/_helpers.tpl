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
