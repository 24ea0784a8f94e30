# Application / function tier: who may send e-mail.
# Allow when the subject's trust score is at least 50 and nothing upstream
# tainted the data as confidential.
package kest.send_email

default allow := false

allow if {
	input.subject.trust_score >= 50
	not "confidential" in input.subject.taints
}
