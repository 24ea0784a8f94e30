# Security clearance, SPEC §12.
#
# Allowed when the subject's clearance level >= the object's classification
# level, the subject is not suspended (subject.attributes.suspended absent,
# null or false) and subject.trust_score >= object.attributes.min_trust
# (default 50). Missing or malformed levels, a non-boolean suspended or a
# non-numeric min_trust deny.
package kest.security

default allow := false

level_names := {"unclassified": 0, "confidential": 1, "secret": 2, "top_secret": 3}

level(x) := x if {
	is_number(x)
	x in {0, 1, 2, 3}
}

level(x) := level_names[x] if is_string(x)

subject_level := level(input.subject.attributes.clearance)

object_level := level(input.object.attributes.classification)

default suspended := true

suspended := false if object.get(input.subject.attributes, "suspended", null) == null

suspended := false if input.subject.attributes.suspended == false

default min_trust := 50

min_trust := input.object.attributes.min_trust if input.object.attributes.min_trust != null

allow if {
	subject_level >= object_level
	suspended == false
	is_number(input.subject.trust_score)
	is_number(min_trust)
	input.subject.trust_score >= min_trust
}
