# Clark-Wilson (well-formed transactions, separation of duty), SPEC §12.
#
# Allowed when
# - object.attributes.cdi is in attributes.certified_cdis (the TP is
#   certified for this constrained data item),
# - environment.operation is in subject.attributes.authorized_tps, and
# - separation of duty: no ancestor of the same user has an operation listed
#   in attributes.separate_from (an array, possibly empty).
# Missing attributes deny, and so does a missing subject.user (a non-empty
# string: separation of duty is per user).
package kest.clark_wilson

default allow := false

default ancestors := []

ancestors := input.lineage.ancestors if is_array(input.lineage.ancestors)

user := input.subject.user if {
	is_string(input.subject.user)
	input.subject.user != ""
}

default cdi_certified := false

cdi_certified if {
	is_string(input.object.attributes.cdi)
	is_array(input.attributes.certified_cdis)
	input.object.attributes.cdi in input.attributes.certified_cdis
}

default tp_authorized := false

tp_authorized if {
	is_string(input.environment.operation)
	is_array(input.subject.attributes.authorized_tps)
	input.environment.operation in input.subject.attributes.authorized_tps
}

# History: the same user already performed an operation this one must be
# separated from.
default separation_violated := false

separation_violated if {
	is_array(input.attributes.separate_from)
	some a in ancestors
	a.user == user
	a.operation in input.attributes.separate_from
}

allow if {
	cdi_certified
	tp_authorized
	is_string(user)
	is_array(input.attributes.separate_from)
	not separation_violated
}
