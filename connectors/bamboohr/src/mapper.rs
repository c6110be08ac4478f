//! BambooHR employee (a custom report row) → canonical worker, org unit
//! (department) and location; the changed feed's entries map to nothing.
//!
//! Every report value is a string (or null): an empty string and the zero
//! date `0000-00-00` mean "no value". `id` is BambooHR's immutable employee
//! id, the key; `employeeNumber` is company-assigned, editable and optional,
//! so it is only an attribute. `supervisorEId` is the supervisor's employee
//! id (a manager reference). The report names departments and locations,
//! not their ids: the name is their source id. Unknown extra fields are ignored.

use canonical_model::{
    Entity, EntityKind, FieldRule, Location, MapError, Mapper, MappingVersion, OrgUnit, Transform,
    Worker,
};
use serde_json::Value;

use EntityKind::{Location as L, OrgUnit as O, Worker as W};

/// Name of the employees mapper in `mapping_version`.
pub const MAPPER: &str = "bamboohr.employees";
/// Bump whenever [`rules`] change.
pub const VERSION: &str = "1";

/// Every field rule of the employees mapping (pointers into one report row).
pub fn rules() -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(W, "source_id", &["/id"], Text),
        FieldRule::new(W, "worker_number", &["/employeeNumber"], TextOrBlank),
        FieldRule::new(W, "display_name", &["/displayName"], TextOrBlank),
        FieldRule::new(W, "work_email", &["/workEmail"], TextOrBlank),
        FieldRule::new(W, "work_phone", &["/workPhone"], TextOrBlank),
        FieldRule::new(W, "business_title", &["/jobTitle"], TextOrBlank),
        FieldRule::new(W, "hire_date", &["/hireDate"], DateOrBlank),
        FieldRule::new(W, "termination_date", &["/terminationDate"], DateOrBlank),
        FieldRule::new(W, "employment_status", &["/status"], TextOrBlank),
        FieldRule::new(W, "org_unit", &["/department"], Ref(O)),
        FieldRule::new(W, "location", &["/location"], Ref(L)),
        FieldRule::new(W, "manager", &["/supervisorEId"], Ref(W)),
        FieldRule::new(W, "source_modified_at", &["/lastChanged"], Timestamp),
        FieldRule::new(O, "source_id", &["/department"], Text),
        FieldRule::new(O, "name", &["/department"], Text),
        FieldRule::new(L, "source_id", &["/location"], Text),
        FieldRule::new(L, "name", &["/location"], Text),
    ]
}

/// A report row with its "no value" strings (blank, `0000-00-00`) as null,
/// so that optional references and dates read as absent, and numbers as the
/// strings BambooHR documents (`"id": 123` and `"id": "123"` are one employee).
fn without_blanks(record: &Value) -> Result<Value, MapError> {
    let Value::Object(fields) = record else {
        return Err(MapError::NotAnObject);
    };
    let mut out = fields.clone();
    for v in out.values_mut() {
        match v {
            Value::String(s) => {
                let t = s.trim();
                if t.is_empty() || t.starts_with("0000-00-00") {
                    *v = Value::Null;
                }
            }
            Value::Number(n) => *v = Value::String(n.to_string()),
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

/// The employees mapper.
#[derive(Debug, Clone)]
pub struct EmployeesMapper {
    mapping: MappingVersion,
}

impl EmployeesMapper {
    pub fn new() -> Self {
        Self {
            mapping: MappingVersion::new(MAPPER, VERSION, rules())
                .expect("the built-in bamboohr rules are valid"),
        }
    }
}

impl Default for EmployeesMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl Mapper for EmployeesMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.mapping
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        let record = without_blanks(record)?;
        let r = self.mapping.reader(&record);
        let worker = Worker {
            source_id: r.required_text(W, "source_id")?,
            worker_number: r.text(W, "worker_number")?,
            display_name: r.text(W, "display_name")?,
            work_email: r.text(W, "work_email")?,
            work_phone: r.text(W, "work_phone")?,
            business_title: r.text(W, "business_title")?,
            hire_date: r.date(W, "hire_date")?,
            termination_date: r.date(W, "termination_date")?,
            employment_status: r.text(W, "employment_status")?,
            org_unit: r.text(W, "org_unit")?,
            location: r.text(W, "location")?,
            manager: r.text(W, "manager")?,
            source_modified_at: r.timestamp(W, "source_modified_at")?,
            ..Worker::default()
        };
        let org = match &worker.org_unit {
            Some(_) => Some(OrgUnit {
                source_id: r.required_text(O, "source_id")?,
                name: r.text(O, "name")?,
                org_type: None,
            }),
            None => None,
        };
        let location = match &worker.location {
            Some(_) => Some(Location {
                source_id: r.required_text(L, "source_id")?,
                name: r.text(L, "name")?,
                country: None,
            }),
            None => None,
        };
        let mut out = vec![Entity::Worker(worker)];
        out.extend(org.map(Entity::OrgUnit));
        out.extend(location.map(Entity::Location));
        Ok(out)
    }
}

/// The changed feed's mapper: its entries say *that* an employee changed,
/// not what it holds (the report does), so `Inserted` and `Updated` map to
/// no entity; `Deleted` entries never reach a mapper (they are tombstones).
#[derive(Debug, Clone)]
pub struct ChangesMapper {
    mapping: MappingVersion,
}

impl ChangesMapper {
    pub fn new() -> Self {
        let rules = vec![FieldRule::new(W, "source_id", &["/id"], Transform::Text)];
        Self {
            mapping: MappingVersion::new("bamboohr.employee_changes", "1", rules)
                .expect("the built-in bamboohr rules are valid"),
        }
    }
}

impl Default for ChangesMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl Mapper for ChangesMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.mapping
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        if !record.is_object() {
            return Err(MapError::NotAnObject);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_blanks_and_zero_dates_map_to_typed_values_or_none() {
        let rec = json!({
            "id": "41", "employeeNumber": "", "displayName": "Zoë Ørsted-Nguyễn",
            "workEmail": "zoe@acme.example", "status": "Inactive", "hireDate": "2019-04-01",
            "terminationDate": "2024-03-31", "department": "", "location": "Kraków",
            "supervisorEId": "0000-00-00", "lastChanged": "2024-04-01T08:00:00+00:00",
            "customShoeSize": "44"
        });
        let out = EmployeesMapper::new().map(&rec).unwrap();
        assert_eq!(out.len(), 2, "worker and location; no department");
        let Entity::Worker(w) = &out[0] else {
            panic!("worker first")
        };
        assert_eq!(w.worker_number, None);
        assert_eq!(w.org_unit, None);
        assert_eq!(w.manager, None);
        assert_eq!(w.employment_status.as_deref(), Some("Inactive"));
        assert_eq!(w.termination_date.unwrap().to_string(), "2024-03-31");
        let zero = json!({"id": "42", "hireDate": "0000-00-00", "terminationDate": ""});
        let Entity::Worker(w) = &EmployeesMapper::new().map(&zero).unwrap()[0] else {
            panic!("worker")
        };
        assert_eq!((w.hire_date, w.termination_date), (None, None));
        let numeric = json!({"id": 44, "supervisorEId": 41, "lastChanged": "2024-04-01T08:00:00Z"});
        let Entity::Worker(w) = &EmployeesMapper::new().map(&numeric).unwrap()[0] else {
            panic!("worker")
        };
        assert_eq!(
            (w.source_id.as_str(), w.manager.as_deref()),
            ("44", Some("41"))
        );
        let bad = EmployeesMapper::new()
            .map(&json!({"id": "43", "hireDate": "2024-02-30"}))
            .unwrap_err();
        assert!(bad.to_string().contains("/hireDate"), "{bad}");
    }
}
