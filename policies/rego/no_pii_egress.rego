# Enterprise tier: personal data never leaves through a sending operation.
# Deny every operation whose name starts with "send_" when the lineage
# carries the "pii" taint; allow everything else.
package kest.no_pii_egress

default allow := false

deny if {
	"pii" in input.subject.taints
	startswith(input.environment.operation, "send_")
}

allow if not deny
