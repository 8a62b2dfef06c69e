//! The system check that `test` and `demo` run first: a Vulkan loader that loads, at least
//! one driver that enumerates, and the Khronos validation layer. Missing pieces are
//! installed with apt when we are root on a Debian-like system; otherwise we stop loudly.

use std::process::Command;

const PACKAGES: &[&str] = &["mesa-vulkan-drivers", "libvulkan1", "vulkan-validationlayers"];
const VALIDATION_LAYER: &str = "VK_LAYER_KHRONOS_validation";

/// What the machine has.
struct Found {
    devices: Vec<String>,
    validation_layer: bool,
}

/// Checks the system and installs what is missing when it can. Returns an error naming the
/// exact command to run when it cannot.
pub fn ensure() -> Result<(), String> {
    match probe() {
        Ok(found) if found.validation_layer && !found.devices.is_empty() => {
            report(&found);
            return Ok(());
        }
        Ok(found) if found.devices.is_empty() => {
            println!("xtask: the Vulkan loader loads but no driver enumerates a device")
        }
        Ok(_) => println!("xtask: the Vulkan validation layer {VALIDATION_LAYER} is missing"),
        Err(why) => println!("xtask: {why}"),
    }
    install()?;
    match probe() {
        Ok(found) if found.validation_layer && !found.devices.is_empty() => {
            report(&found);
            Ok(())
        }
        Ok(found) if found.devices.is_empty() => Err(format!(
            "after installing {}, still no Vulkan device enumerates",
            PACKAGES.join(" ")
        )),
        Ok(_) => Err(format!(
            "after installing {}, the layer {VALIDATION_LAYER} is still missing",
            PACKAGES.join(" ")
        )),
        Err(why) => Err(format!(
            "after installing {}: {why}",
            PACKAGES.join(" ")
        )),
    }
}

fn report(found: &Found) {
    println!(
        "xtask: Vulkan ok: {} device(s): {}; {VALIDATION_LAYER} present",
        found.devices.len(),
        found.devices.join(", ")
    );
}

fn install_command() -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y {}",
        PACKAGES.join(" ")
    )
}

fn install() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let debian_like = std::path::Path::new("/etc/debian_version").exists()
        && Command::new("apt-get").arg("--version").output().is_ok();
    if !(root && debian_like) {
        return Err(format!(
            "gantry needs a Vulkan loader, a Vulkan driver and the Khronos validation layer.\n\
             Install them with:\n\n    {}\n",
            install_command()
        ));
    }
    println!("xtask: installing {} with apt", PACKAGES.join(" "));
    let run = |args: &[&str]| -> Result<(), String> {
        println!("==> apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed with {status}; run `{}` by hand",
                args.join(" "),
                install_command()
            ))
        }
    };
    run(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(PACKAGES);
    run(&install)
}

/// Loads the loader, lists the instance layers and enumerates the physical devices.
fn probe() -> Result<Found, String> {
    // SAFETY: loading the system's Vulkan loader runs its initialisers; we trust the system's
    // libvulkan as every Vulkan program does. The Entry is dropped only after all use below.
    let entry = unsafe { ash::Entry::load() }
        .map_err(|e| format!("the Vulkan loader (libvulkan.so.1) does not load: {e}"))?;
    // SAFETY: `entry` is a loaded loader; enumerating layers has no preconditions.
    let layers = unsafe { entry.enumerate_instance_layer_properties() }
        .map_err(|e| format!("vkEnumerateInstanceLayerProperties failed: {e}"))?;
    let validation_layer = layers.iter().any(|layer| {
        layer
            .layer_name_as_c_str()
            .is_ok_and(|name| name.to_bytes() == VALIDATION_LAYER.as_bytes())
    });
    let app = ash::vk::ApplicationInfo::default().api_version(ash::vk::API_VERSION_1_1);
    let info = ash::vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `info` and `app` outlive the call; no extensions or layers are requested.
    let instance = unsafe { entry.create_instance(&info, None) }.map_err(|e| {
        format!("vkCreateInstance failed ({e}): the loader finds no usable driver")
    })?;
    // SAFETY: `instance` is a live instance created above.
    let physical = unsafe { instance.enumerate_physical_devices() };
    let devices = physical
        .unwrap_or_default()
        .into_iter()
        .map(|pd| {
            // SAFETY: `pd` was just enumerated from the live `instance`.
            let props = unsafe { instance.get_physical_device_properties(pd) };
            props
                .device_name_as_c_str()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "<unnamed>".to_owned())
        })
        .collect();
    // SAFETY: no object created from `instance` is alive; it is destroyed exactly once.
    unsafe { instance.destroy_instance(None) };
    Ok(Found {
        devices,
        validation_layer,
    })
}
