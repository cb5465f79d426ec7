# r2r_cargo_build(): build Rust ROS 2 nodes (r2r) with cargo from inside an ament_cmake
# package, and install them.
#
#   r2r_cargo_build(
#     TARGET <name>                   custom target that runs cargo (part of ALL)
#     BINS <bin>...                   cargo [[bin]] names to build and install
#     [FEATURES <feature>...]         cargo features to enable
#     [IDL_PACKAGES <pkg>...]         interface packages r2r should generate types for
#     [INTERFACES_TARGET <target>]    the rosidl_generate_interfaces() target of this
#                                     package, to make its not-yet-installed types
#                                     usable from r2r
#     [DESTINATION <dir>]             install dir, default lib/${PROJECT_NAME}
#   )
#
# Why a generated shell script instead of `cmake -E env ... cargo` in the custom target:
# r2r's IDL_PACKAGE_FILTER is a ';'-separated list, and ';' is CMake's list separator,
# so it cannot survive as one argument of add_custom_target(COMMAND ...). The script also
# lets a developer rerun exactly the same cargo call by hand from the build directory.
#
# How r2r's build scripts (r2r_common, r2r_msg_gen, r2r_rcl, r2r_actions) use the
# environment, which is what this helper arranges:
#   AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH  prefixes searched for interface packages
#       (share/ament_index/resource_index/rosidl_interfaces/<pkg>), for headers
#       (<prefix>/include) and for libraries to link (<prefix>/lib).
#   IDL_PACKAGE_FILTER  ';'-separated packages to generate types for (default: all that
#       are sourced, which is slow).
#   CMAKE_INCLUDE_DIRS  extra ':'-separated include dirs handed to bindgen.
#   CMAKE_IDL_PACKAGES  if set, replaces the prefix search with an explicit list; we do
#       NOT use it and clear it so a stray value in the shell cannot change discovery.
#   ROS_DISTRO  must be set (r2r refuses to build without a sourced ROS).
# r2r caches its generated bindings keyed by a hash of those variables, so a change of
# sourced workspace regenerates them, but an edit of a .msg file does not (its README
# says to `cargo clean -p r2r_msg_gen`); the script below does that when msg/ changes.

include_guard(GLOBAL)

function(r2r_cargo_build)
  cmake_parse_arguments(ARG "" "TARGET;INTERFACES_TARGET;DESTINATION"
    "BINS;FEATURES;IDL_PACKAGES" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "r2r_cargo_build: unknown arguments: ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_TARGET OR NOT ARG_BINS)
    message(FATAL_ERROR "r2r_cargo_build: TARGET and BINS are required")
  endif()
  if(NOT ARG_DESTINATION)
    set(ARG_DESTINATION "lib/${PROJECT_NAME}")
  endif()

  # cargo from PATH first (a pinned toolchain wins); rustup's default locations cover a
  # shell that sourced ROS but not ~/.cargo/env. Override with -DCARGO_EXECUTABLE=...
  find_program(CARGO_EXECUTABLE cargo PATHS "$ENV{CARGO_HOME}/bin" "$ENV{HOME}/.cargo/bin")
  if(NOT CARGO_EXECUTABLE)
    message(FATAL_ERROR "cargo not found: install Rust (https://rustup.rs) and make sure "
      "cargo is on PATH when running colcon")
  endif()

  # Cargo's output goes under the colcon build dir (build/<pkg>/cargo_target), not into
  # the source tree's target/: a `cargo build` by hand with other features or another
  # sourced distro then never invalidates, or is invalidated by, the colcon build.
  set(target_dir "${CMAKE_CURRENT_BINARY_DIR}/cargo_target")

  set(idl_packages ${ARG_IDL_PACKAGES})
  set(include_dirs "")
  set(lib_dirs "")
  set(own_prefix "")
  set(msg_dir "")
  set(interface_deps "")
  if(ARG_INTERFACES_TARGET)
    # This package's own interfaces are built by this very package, so at cargo time
    # they are not installed and not on AMENT_PREFIX_PATH yet. Point r2r at the build
    # tree instead:
    #  - discovery: rosidl_generate_interfaces() registers the package in the ament
    #    index, and ament_index_register_resource() writes that marker file under
    #    ${CMAKE_BINARY_DIR}/ament_cmake_index/share/ament_index/resource_index/
    #    rosidl_interfaces/<pkg>, i.e. that directory is a prefix r2r can search;
    #  - headers: rosidl_generator_c and rosidl_typesupport_introspection_c put their
    #    headers under these build dirs (include/<pkg>/... once installed);
    #  - libraries: r2r links <pkg>__rosidl_generator_c, __rosidl_typesupport_c and
    #    __rosidl_typesupport_introspection_c, which are these targets' files.
    list(APPEND idl_packages ${ARG_INTERFACES_TARGET})
    set(own_prefix "${CMAKE_BINARY_DIR}/ament_cmake_index")
    list(APPEND include_dirs
      "${CMAKE_CURRENT_BINARY_DIR}/rosidl_generator_c"
      "${CMAKE_CURRENT_BINARY_DIR}/rosidl_typesupport_introspection_c")
    foreach(ts rosidl_generator_c rosidl_typesupport_c rosidl_typesupport_introspection_c)
      rosidl_get_typesupport_target(ts_target ${ARG_INTERFACES_TARGET} ${ts})
      if(NOT ts_target)
        message(FATAL_ERROR "r2r_cargo_build: no ${ts} library for "
          "${ARG_INTERFACES_TARGET}; is rosidl_typesupport_c installed?")
      endif()
      list(APPEND lib_dirs "$<TARGET_FILE_DIR:${ts_target}>")
      list(APPEND interface_deps ${ts_target})
    endforeach()
    set(msg_dir "${CMAKE_CURRENT_SOURCE_DIR}/msg")
  endif()
  list(REMOVE_DUPLICATES idl_packages)

  # Values substituted into the script (@VAR@). The configure-time environment is
  # recorded as a fallback for running the build outside a sourced shell (e.g. `make`
  # in build/<pkg>); when the build step has its own sourced environment, that wins.
  set(CONF_AMENT_PREFIX_PATH "$ENV{AMENT_PREFIX_PATH}")
  set(CONF_CMAKE_PREFIX_PATH "$ENV{CMAKE_PREFIX_PATH}")
  set(CONF_ROS_DISTRO "$ENV{ROS_DISTRO}")
  set(CARGO "${CARGO_EXECUTABLE}")
  set(MANIFEST "${CMAKE_CURRENT_SOURCE_DIR}/Cargo.toml")
  set(SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  set(TARGET_DIR "${target_dir}")
  set(OWN_PREFIX "${own_prefix}")
  set(MSG_DIR "${msg_dir}")
  string(REPLACE ";" ":" INCLUDE_DIRS "${include_dirs}")
  # IDL_PACKAGE_FILTER keeps r2r's ';' separator; the template single-quotes it.
  set(IDL_FILTER "${idl_packages}")
  set(RUST_LINK_FLAGS "")
  if(lib_dirs)
    # -L: where rustc finds the not-yet-installed libs; -rpath-link: lets ld resolve the
    # libraries those libs depend on in turn. No -rpath: at runtime the installed copies
    # are found through LD_LIBRARY_PATH, which sourcing install/setup.bash sets.
    # (Generator expressions, evaluated by file(GENERATE) below; the dirs usually coincide.)
    set(dirs "$<REMOVE_DUPLICATES:${lib_dirs}>")
    set(RUST_LINK_FLAGS
      " -L native=$<JOIN:${dirs}, -L native=> -C link-arg=-Wl,-rpath-link,$<JOIN:${dirs},:>")
  endif()
  set(CARGO_ARGS "build --release")
  if(ARG_FEATURES)
    string(REPLACE ";" "," features "${ARG_FEATURES}")
    string(APPEND CARGO_ARGS " --features ${features}")
  endif()
  foreach(b ${ARG_BINS})
    string(APPEND CARGO_ARGS " --bin ${b}")
  endforeach()

  # Two steps: configure_file substitutes @VAR@ (leaving shell ${...} alone), then
  # file(GENERATE) evaluates the $<TARGET_FILE_DIR:...> generator expressions.
  set(script_in "${CMAKE_CURRENT_BINARY_DIR}/${ARG_TARGET}.sh.genexp")
  set(script "${CMAKE_CURRENT_BINARY_DIR}/${ARG_TARGET}.sh")
  configure_file("${CMAKE_CURRENT_FUNCTION_LIST_DIR}/r2r_cargo_build.sh.in" "${script_in}"
    @ONLY)
  file(GENERATE OUTPUT "${script}" INPUT "${script_in}")

  # No OUTPUT/DEPENDS on purpose: the target runs on every build and cargo decides what
  # is stale (CMake cannot see Cargo.toml, Cargo.lock, src/**.rs or r2r's inputs).
  add_custom_target(${ARG_TARGET} ALL
    COMMAND sh "${script}"
    WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
    COMMENT "cargo ${CARGO_ARGS}"
    USES_TERMINAL
    VERBATIM
  )
  if(ARG_INTERFACES_TARGET)
    # Generate and compile our interfaces first: r2r reads their headers and links
    # their libraries. (r2r's untyped API looks message types up in a table built at
    # compile time, so types that are only installed later cannot be used at runtime.)
    add_dependencies(${ARG_TARGET} ${ARG_INTERFACES_TARGET} ${interface_deps})
  endif()

  set(bin_paths "")
  foreach(b ${ARG_BINS})
    list(APPEND bin_paths "${target_dir}/release/${b}${CMAKE_EXECUTABLE_SUFFIX}")
  endforeach()
  install(PROGRAMS ${bin_paths} DESTINATION "${ARG_DESTINATION}")
endfunction()
