//! IAM users and their access keys: long-term identities of an account.
//! A key signs requests like a configured credential pair (the credential
//! lookup finds it through [`principal_of_access_key`]); with IAM enforced,
//! the user's inline and attached policies limit what it may do
//! (`authority::identity_policies`). At most two keys per user, as on AWS.

use super::*;
use cove_model::iam::{IamAccessKey, IamUser};
use cove_model::ids::SECRET_ALPHABET;
use cove_wire::Principal;

/// IAM's quota of access keys per user.
const MAX_KEYS_PER_USER: usize = 2;

/// The principal an IAM user's active access key stands for.
pub fn principal_of_access_key(w: &World, access_key: &str) -> Option<Principal> {
    let key = w.iam_access_keys.get(access_key).filter(|k| k.active)?;
    let user = w.iam_users.get(&key.user_key)?;
    Some(Principal {
        access_key: key.access_key_id.clone(),
        secret_key: key.secret_access_key.clone(),
        session_token: None,
        account_id: user.account_id.clone(),
        arn: user.arn.clone(),
        user_id: user.user_id.clone(),
    })
}

fn no_such_user(name: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchEntity",
        format!("The user with name {name} cannot be found."),
    )
}

pub(crate) fn user<'w>(w: &'w World, account: &str, name: &str) -> AwsResult<&'w IamUser> {
    w.iam_users
        .get(&IamUser::key_of(account, name))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| no_such_user(name))
}

fn user_out(u: &IamUser) -> Value {
    let mut out = json!({
        "Path": u.path,
        "UserName": u.name,
        "UserId": u.user_id,
        "Arn": u.arn,
        "CreateDate": rfc3339_of(u.created),
    });
    if let Some(b) = &u.permissions_boundary {
        out["PermissionsBoundary"] = json!({
            "PermissionsBoundaryType": "Policy",
            "PermissionsBoundaryArn": b,
        });
    }
    if !u.tags.is_empty() {
        out["Tags"] = json!(tags_out(&u.tags));
    }
    out
}

fn key_metadata(k: &IamAccessKey) -> Value {
    json!({
        "UserName": k.user_name,
        "AccessKeyId": k.access_key_id,
        "Status": if k.active { "Active" } else { "Inactive" },
        "CreateDate": rfc3339_of(k.created),
    })
}

impl Cx<'_> {
    /// The user a call names, or, when it names none, the calling user
    /// (IAM's rule for the access-key and GetUser calls).
    fn user_name<'n>(&'n self, named: Option<&'n str>) -> AwsResult<&'n str> {
        match named {
            Some(n) => Ok(n),
            None => self
                .caller
                .split_once(":user/")
                .map(|(_, path)| path.rsplit('/').next().unwrap_or_default())
                .ok_or_else(|| {
                    AwsError::client(
                        "ValidationError",
                        "Must specify userName when calling with non-User credentials",
                    )
                }),
        }
    }

    pub(crate) fn users(&self, request: &Request) -> Option<AwsResult<Value>> {
        Some(match request {
            Request::CreateUser(r) => self.create_user(r),
            Request::GetUser(r) => match &r.user_name {
                None if !self.caller.contains(":user/") => Ok(json!({"User": {
                    "Path": "/",
                    "UserName": "",
                    "UserId": self.account,
                    "Arn": self.caller,
                    "CreateDate": rfc3339_of(0),
                }})),
                named => self.read(|w| {
                    let name = self.user_name(named.as_deref())?;
                    Ok(json!({"User": user_out(user(w, self.account, name)?)}))
                }),
            },
            Request::DeleteUser(r) => self.delete_user(&r.user_name),
            Request::ListUsers(r) => self.read(|w| {
                let prefix = r.path_prefix.as_deref().unwrap_or("/");
                let users: Vec<Value> = w
                    .iam_users
                    .values()
                    .filter(|u| u.path.starts_with(prefix))
                    .map(|u| user_out(u))
                    .collect();
                page("Users", users, r.marker.as_deref(), r.max_items)
            }),
            Request::CreateAccessKey(r) => self.create_access_key(r.user_name.as_deref()),
            Request::ListAccessKeys(r) => self.read(|w| {
                let name = self.user_name(r.user_name.as_deref())?;
                let u = user(w, self.account, name)?;
                let keys: Vec<Value> = w
                    .iam_access_keys
                    .values()
                    .filter(|k| k.user_key == u.key)
                    .map(|k| key_metadata(k))
                    .collect();
                let mut out = page("AccessKeyMetadata", keys, r.marker.as_deref(), r.max_items)?;
                out["UserName"] = json!(u.name);
                Ok(out)
            }),
            Request::UpdateAccessKey(r) => {
                let active = match r.status.as_str() {
                    "Active" => true,
                    "Inactive" => false,
                    other => {
                        return Some(Err(AwsError::client(
                            "ValidationError",
                            format!("1 validation error detected: Value '{other}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"),
                        )))
                    }
                };
                self.update_access_key(r.user_name.as_deref(), &r.access_key_id, |tx, mut k| {
                    k.active = active;
                    tx.put(k);
                })
            }
            Request::DeleteAccessKey(r) => {
                self.update_access_key(r.user_name.as_deref(), &r.access_key_id, |tx, k| {
                    tx.delete::<IamAccessKey>(&k.access_key_id)
                })
            }
            Request::PutUserPolicy(r) => self.update_user(&r.user_name, |u| {
                parse(&r.policy_document, Kind::Identity)?;
                u.inline_policies
                    .insert(r.policy_name.clone(), r.policy_document.clone());
                Ok(())
            }),
            Request::GetUserPolicy(r) => self.read(|w| {
                let u = user(w, self.account, &r.user_name)?;
                let doc = u
                    .inline_policies
                    .get(&r.policy_name)
                    .ok_or_else(|| no_such_user_policy(&r.policy_name))?;
                Ok(json!({
                    "UserName": u.name,
                    "PolicyName": r.policy_name,
                    "PolicyDocument": url_encoded(doc),
                }))
            }),
            Request::ListUserPolicies(r) => self.read(|w| {
                let names: Vec<Value> = user(w, self.account, &r.user_name)?
                    .inline_policies
                    .keys()
                    .map(|n| json!(n))
                    .collect();
                page("PolicyNames", names, r.marker.as_deref(), r.max_items)
            }),
            Request::DeleteUserPolicy(r) => self.update_user(&r.user_name, |u| {
                u.inline_policies
                    .remove(&r.policy_name)
                    .map(drop)
                    .ok_or_else(|| no_such_user_policy(&r.policy_name))
            }),
            Request::AttachUserPolicy(r) => self.store.write_as(self.account, |tx| {
                if aws_managed(&r.policy_arn).is_none() {
                    customer_policy(&tx.world, &r.policy_arn)?;
                }
                let mut u = user(&tx.world, self.account, &r.user_name)?.clone();
                if !u.attached_policies.contains(&r.policy_arn) {
                    u.attached_policies.push(r.policy_arn.clone());
                }
                tx.put(u);
                Ok(json!({}))
            }),
            Request::DetachUserPolicy(r) => self.update_user(&r.user_name, |u| {
                detach(&mut u.attached_policies, &r.policy_arn)
            }),
            Request::ListAttachedUserPolicies(r) => self.read(|w| {
                let attached = user(w, self.account, &r.user_name)?
                    .attached_policies
                    .clone();
                attached_page(
                    w,
                    &attached,
                    r.path_prefix.as_deref(),
                    r.marker.as_deref(),
                    r.max_items,
                )
            }),
            _ => return None,
        })
    }

    fn create_user(&self, r: &CreateUserRequest) -> AwsResult<Value> {
        let path = r.path.clone().unwrap_or_else(|| "/".into());
        if let Some(b) = &r.permissions_boundary {
            self.read(|w| {
                if aws_managed(b).is_none() {
                    customer_policy(w, b)?;
                }
                Ok(Value::Null)
            })?;
        }
        let user = IamUser {
            key: IamUser::key_of(self.account, &r.user_name),
            name: r.user_name.clone(),
            arn: format!("arn:aws:iam::{}:user{path}{}", self.account, r.user_name),
            path,
            user_id: format!("AIDA{}", random_string(UPPER_ALNUM, 17)),
            account_id: self.account.to_string(),
            created: now(),
            permissions_boundary: r.permissions_boundary.clone(),
            inline_policies: Default::default(),
            attached_policies: Vec::new(),
            tags: tags_in(r.tags.as_deref()),
        };
        self.store.write_as(self.account, |tx| {
            if tx.world.iam_users.contains_key(&user.key) {
                return Err(AwsError::new(
                    409,
                    "EntityAlreadyExists",
                    format!("User with name {} already exists.", r.user_name),
                ));
            }
            tx.put(user.clone());
            Ok(json!({"User": user_out(&user)}))
        })
    }

    fn delete_user(&self, name: &str) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let u = user(&tx.world, self.account, name)?;
            let conflict = if tx
                .world
                .iam_access_keys
                .values()
                .any(|k| k.user_key == u.key)
            {
                Some("Cannot delete entity, must delete access keys first.")
            } else if !u.inline_policies.is_empty() {
                Some("Cannot delete entity, must delete policies first.")
            } else if !u.attached_policies.is_empty() {
                Some("Cannot delete entity, must detach all policies first.")
            } else {
                None
            };
            if let Some(message) = conflict {
                return Err(delete_conflict(message));
            }
            let key = u.key.clone();
            tx.delete::<IamUser>(&key);
            Ok(json!({}))
        })
    }

    fn update_user(
        &self,
        name: &str,
        change: impl FnOnce(&mut IamUser) -> AwsResult<()>,
    ) -> AwsResult<Value> {
        self.store.write_as(self.account, |tx| {
            let mut u = user(&tx.world, self.account, name)?.clone();
            change(&mut u)?;
            tx.put(u);
            Ok(json!({}))
        })
    }

    fn create_access_key(&self, named: Option<&str>) -> AwsResult<Value> {
        let name = self.user_name(named)?;
        self.store.write_as(self.account, |tx| {
            let u = user(&tx.world, self.account, name)?.clone();
            let held = tx
                .world
                .iam_access_keys
                .values()
                .filter(|k| k.user_key == u.key)
                .count();
            if held >= MAX_KEYS_PER_USER {
                return Err(AwsError::new(
                    409,
                    "LimitExceeded",
                    format!("Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"),
                ));
            }
            let key = IamAccessKey {
                access_key_id: format!("AKIA{}", random_string(UPPER_ALNUM, 16)),
                secret_access_key: random_string(SECRET_ALPHABET, 40),
                user_key: u.key.clone(),
                user_name: u.name.clone(),
                account_id: self.account.to_string(),
                active: true,
                created: now(),
            };
            tx.put(key.clone());
            let mut out = key_metadata(&key);
            out["SecretAccessKey"] = json!(key.secret_access_key);
            Ok(json!({ "AccessKey": out }))
        })
    }

    /// Applies `change` to one of a user's keys (`NoSuchEntity` for a key
    /// the user does not have).
    fn update_access_key(
        &self,
        named: Option<&str>,
        id: &str,
        change: impl FnOnce(&mut cove_store::Tx, IamAccessKey),
    ) -> AwsResult<Value> {
        let name = self.user_name(named)?;
        self.store.write_as(self.account, |tx| {
            let u = user(&tx.world, self.account, name)?;
            let key = tx
                .world
                .iam_access_keys
                .get(id)
                .filter(|k| k.user_key == u.key)
                .map(|k| (**k).clone())
                .ok_or_else(|| {
                    AwsError::new(
                        404,
                        "NoSuchEntity",
                        format!("The Access Key with id {id} cannot be found"),
                    )
                })?;
            change(tx, key);
            Ok(json!({}))
        })
    }
}

fn no_such_user_policy(name: &str) -> AwsError {
    AwsError::new(
        404,
        "NoSuchEntity",
        format!("The user policy with name {name} cannot be found."),
    )
}
