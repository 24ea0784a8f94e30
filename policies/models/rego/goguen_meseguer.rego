# Goguen-Meseguer (non-interference), SPEC §12.
#
# Denied when subject.taints contains "domain:<d>" for a d that is neither
# object.attributes.domain nor in object.attributes.may_be_influenced_by;
# otherwise allowed. An object without a domain (a string) denies; a
# may_be_influenced_by that is present but not an array denies (absent means
# none).
package kest.goguen_meseguer

default allow := false

domain := input.object.attributes.domain if is_string(input.object.attributes.domain)

default influences_valid := false

influences_valid if object.get(input.object.attributes, "may_be_influenced_by", null) == null

influences_valid if is_array(input.object.attributes.may_be_influenced_by)

default influence_list := []

influence_list := input.object.attributes.may_be_influenced_by if is_array(input.object.attributes.may_be_influenced_by)

influences := {d | some d in influence_list; is_string(d)}

allowed_domains := {domain} | influences

default taints := []

taints := input.subject.taints if is_array(input.subject.taints)

taint_domains := {trim_prefix(t, "domain:") | some t in taints; is_string(t); startswith(t, "domain:")}

interfering_domains := taint_domains - allowed_domains

allow if {
	is_string(domain)
	influences_valid
	count(interfering_domains) == 0
}
