# Function tier (the shape of the reference README's example).
# Allow a step only when its trust score is at least 70 and it is not a
# root (a root step has no upstream lineage to vouch for it).
package kest.allow

default allow := false

allow if {
	input.trust_score >= 70
	input.is_root == false
}
