//! `/chosen` (DT spec §3.6): boot arguments and the console.

use super::cells::{self, str_prop};
use super::{Device, DeviceTree, DtError};

impl<'a> DeviceTree<'a> {
    /// `/chosen/bootargs`, if present.
    pub fn bootargs(&self) -> Result<Option<&'a str>, DtError<'a>> {
        match self.root_child("chosen")? {
            Some(chosen) => str_prop(chosen, "bootargs"),
            None => Ok(None),
        }
    }

    /// `/chosen/stdout-path` without its `:options` suffix (`serial0:115200n8` → `serial0`).
    pub fn stdout_path(&self) -> Result<Option<&'a str>, DtError<'a>> {
        let Some(chosen) = self.root_child("chosen")? else {
            return Ok(None);
        };
        let path = str_prop(chosen, "stdout-path")?;
        Ok(path.map(|p| p.split(':').next().unwrap_or(p)))
    }

    /// The console device named by `/chosen/stdout-path`: a full path, or an alias resolved
    /// through `/aliases`. It must have `reg` (its first entry is the UART's registers).
    pub fn stdout(&self) -> Result<Option<Device<'a>>, DtError<'a>> {
        let Some(path) = self.stdout_path()? else {
            return Ok(None);
        };
        let full = if path.starts_with('/') {
            path
        } else {
            let aliases = self.root_child("aliases")?;
            let alias = aliases.and_then(|a| a.properties().find(|p| p.name == path));
            match alias {
                Some(p) => {
                    cells::StrList::new(p.value).and_then(|l| l.first()).ok_or(DtError::BadString { node: "aliases", property: "alias" })?
                }
                None => return Err(DtError::StdoutNotFound { path }),
            }
        };
        let device = self.find_path(full)?.ok_or(DtError::StdoutNotFound { path })?;
        if device.regs().is_empty() {
            return Err(DtError::MissingReg { node: device.name() });
        }
        Ok(Some(device))
    }
}
