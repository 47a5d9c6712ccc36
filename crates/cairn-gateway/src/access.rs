//! The gateway's part in authorization: who a logged-in user is to the cluster, and the
//! table's early answer.
//!
//! The gateway authenticates (HTTP Basic, XML login) and then calls the cluster *for* the
//! user ([`cairn_api::Client::acting_for`]): the cluster decides every request as that
//! user, by the one table in `cairn_core::auth` and the catalog's rules. Before it reads a
//! body or calls anything, the gateway asks the same table whether the route or call is
//! open to the user's role at all ([`admit`]), so a viewer learns nothing from a bad body
//! and costs the cluster nothing. It decides nothing the cluster does not decide again.

use cairn_core::auth::{Admission, Interface, Principal};

use crate::users::Identity;

/// The principal a logged-in user of `adapter` (`rest`, `xml`) is to the cluster: named
/// `adapter:name` in job records and logs, with the user's role.
pub fn principal(who: &Identity, adapter: &str) -> Principal {
    Principal::User {
        name: format!("{adapter}:{}", who.name),
        role: who.role,
    }
}

/// The table's answer for `who` calling `entry` of `interface`: `Err` with the reason
/// (naming the rule) when refused. An entry without a row is refused.
pub fn admit(interface: Interface, entry: &str, who: &Principal) -> Result<(), String> {
    match cairn_core::auth::admit(interface, entry, who) {
        Admission::Allowed | Admission::OwnHost => Ok(()),
        Admission::Denied(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Role;

    #[test]
    fn users_are_admitted_by_the_table() {
        let viewer = principal(
            &Identity {
                name: "v".into(),
                role: Role::Viewer,
            },
            "rest",
        );
        assert_eq!(
            viewer,
            Principal::User {
                name: "rest:v".into(),
                role: Role::Viewer
            }
        );
        assert!(admit(Interface::Rest, "GET /vms/{eid}", &viewer).is_ok());
        let why = admit(Interface::Rest, "POST /vms/{eid}/back_up", &viewer).unwrap_err();
        assert!(why.contains("needs operator"), "{why}");
        assert!(admit(Interface::Xml, "backupm/remove", &viewer).is_err());
        assert!(admit(Interface::Xml, "backupm/nope", &viewer).is_err());
    }
}
