# Financial transactions, SPEC §12.
#
# - attributes.risk_score == "high" always denies (risk_score is required,
#   a string);
# - withdrawal: needs attributes.mfa_present == true;
# - transfer: attributes.amount <= subject.attributes.limit is allowed; above
#   the limit only with four-eyes approval: an ancestor with action
#   "approve", resource_id == object.id and a non-empty user different from
#   subject.user (a non-empty string);
# - other actions deny.
package kest.financial

default allow := false

default ancestors := []

ancestors := input.lineage.ancestors if is_array(input.lineage.ancestors)

user := input.subject.user if {
	is_string(input.subject.user)
	input.subject.user != ""
}

default risk_acceptable := false

risk_acceptable if {
	is_string(input.attributes.risk_score)
	input.attributes.risk_score != "high"
}

# History: a different, named user approved this very resource.
default approved_by_other_user := false

approved_by_other_user if {
	is_string(user)
	is_string(input.object.id)
	some a in ancestors
	a.action == "approve"
	a.resource_id == input.object.id
	is_string(a.user)
	a.user != ""
	a.user != user
}

allow if {
	input.action == "withdrawal"
	risk_acceptable
	input.attributes.mfa_present == true
}

allow if {
	input.action == "transfer"
	risk_acceptable
	is_number(input.attributes.amount)
	is_number(input.subject.attributes.limit)
	input.attributes.amount <= input.subject.attributes.limit
}

allow if {
	input.action == "transfer"
	risk_acceptable
	is_number(input.attributes.amount)
	is_number(input.subject.attributes.limit)
	input.attributes.amount > input.subject.attributes.limit
	approved_by_other_user
}
