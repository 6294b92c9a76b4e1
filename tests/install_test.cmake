# Installs the already-built softlab into WORK_DIR/prefix and builds two outside projects
# against it with find_package(softlab): examples/embed (run), and examples/custom_attention
# (its plugin trained by the installed softlab command, its linked program run).

# Runs the COMMAND that follows and fails, naming `what` and showing its output, unless it
# exits 0 and prints (on either stream) something matching `pattern`.
function(run_checked what pattern)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${what} printed: ${out}")
  if(NOT rc EQUAL 0 OR NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "${what} failed (${rc}), or printed nothing matching '${pattern}':\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
set(extra)
if(SANITIZE)
  set(extra -DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined)
endif()
# With -Wall -Wextra -Wpedantic -Werror on the public headers (examples/embed/CMakeLists.txt).
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/embed -B ${WORK_DIR}/build
  -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DSOFTLAB_EXAMPLE_WERROR=ON ${extra}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring examples/embed against the installed softlab failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building examples/embed failed (${rc})")
endif()
run_checked("embed_example" "loss fell" ${WORK_DIR}/build/embed_example)

# A training loop of its own on the step API against the installed softlab command on the
# same config (dropout, drop path, accumulation and EMA on): the same state, bit for bit.
set(config ${SOURCE_DIR}/examples/embed/bins_dropout.json)
run_checked("softlab train ${config}" "test accuracy"
  ${WORK_DIR}/prefix/bin/softlab train ${config} --out ${WORK_DIR}/runs/embed --progress plain)
run_checked("embed_train_loop" "bit for bit" ${WORK_DIR}/build/embed_train_loop ${config} ${WORK_DIR}/runs/embed)

# examples/custom_attention against the same installed package: its modules as a plugin
# that the installed softlab command trains with, and as a program linked with softlab.
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/custom_attention -B ${WORK_DIR}/custom
  -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix ${extra}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring examples/custom_attention against the installed softlab failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/custom RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building examples/custom_attention failed (${rc})")
endif()
set(config ${SOURCE_DIR}/examples/custom_attention/bins_taylor.json)
run_checked("softlab train --plugin libcustom_attention.so" "test accuracy"
  ${WORK_DIR}/prefix/bin/softlab train ${config} --plugin ${WORK_DIR}/custom/libcustom_attention.so
  --out ${WORK_DIR}/runs/plugin --set train.epochs=2 --progress plain)
if(NOT EXISTS ${WORK_DIR}/runs/plugin/summary.json)
  message(FATAL_ERROR "softlab train --plugin wrote no summary.json")
endif()
run_checked("custom_attention_train" "both modules learned"
  ${WORK_DIR}/custom/custom_attention_train ${config} ${WORK_DIR}/runs/linked)
