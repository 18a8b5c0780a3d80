;;; ob-chat-ai-tools.el --- The document's own blocks as the model's tools  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; `:tools lookup-price stock' offers the named source blocks of the
;; document, in any Babel language, to the model as functions: the
;; function's name is the block's #+name:, its parameters the block's
;; :var names, typed by their defaults, and its description the block's
;; #+caption: or the paragraph just above it.
;;
;; When the model calls one, the block is run with the model's
;; arguments as :var values, through `org-babel-execute-src-block', so
;; that its own header args apply and its result stays out of the
;; buffer; the value goes back to the model as a `tool' message.  Each
;; call is confirmed first while `ob-chat-ai-confirm-tools' is non-nil.

;;; Code:

;;;; Requirements

(require 'cl-lib)
(require 'ob)
(require 'org-element)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-reply)

(declare-function ob-chat-ai-messages--value-text "ob-chat-ai-messages" (value))

;;;; Customization

(defcustom ob-chat-ai-confirm-tools t
  "Whether to ask before running a block that the model calls as a tool.
The question shows the block's name and the model's arguments, and
takes y (run it), n (the model is told that the user declined) or
a (run this block's calls in this buffer without asking again).  In
batch Emacs, which cannot ask, no tool runs while this is non-nil.
`org-confirm-babel-evaluate' applies to the tool blocks as well."
  :type 'boolean
  :group 'ob-chat-ai)

(defconst ob-chat-ai-tools-default-max-rounds 8
  "How many rounds of tool calls a block allows without :max-tool-rounds.")

(defconst ob-chat-ai-tools--name-regexp "\\`[a-zA-Z0-9_-]\\{1,64\\}\\'"
  "The regexp of a function name that the chat-completions API accepts.")

(defvar ob-chat-ai-tools--running nil
  "The tool blocks running now, as (BUFFER . NAME) pairs, the innermost first.")

(defvar ob-chat-ai-tools--asking nil
  "Non-nil while the user is asked whether a tool may run.")

(defvar-local ob-chat-ai-tools--always nil
  "The names of the blocks of this buffer whose calls run without asking.")

;;;; The tools array

(defun ob-chat-ai-tools-names (params)
  "Return the names of the tool blocks that PARAMS name with :tools, or nil."
  (let ((value (ob-chat-ai--param params :tools)))
    (and value
         (not (member (format "%s" value) '("none" "no")))
         (delete-dups
          (split-string (if (listp value)
                            (mapconcat (lambda (item) (format "%s" item)) value " ")
                          (format "%s" value))
                        "[ \t\n,]+" t)))))

(defun ob-chat-ai-tools-array (params)
  "Return the tools array that PARAMS offer, as a vector, or nil for none.
Signal a `user-error' naming the block when one cannot be offered."
  (let ((names (ob-chat-ai-tools-names params)))
    (and names (vconcat (mapcar #'ob-chat-ai-tools--function names)))))

(defun ob-chat-ai-tools-max-rounds (params)
  "Return how many rounds of tool use PARAMS allow."
  (let ((value (ob-chat-ai--param params :max-tool-rounds)))
    (cond
     ((null value) ob-chat-ai-tools-default-max-rounds)
     ((natnump value) value)
     ((and (stringp value) (string-match-p "\\`[0-9]+\\'" value))
      (string-to-number value))
     (t (ob-chat-ai--user-error ":max-tool-rounds must be a whole number, not %s"
                                value)))))

(defun ob-chat-ai-tools--goto (name)
  "Move point to the block named NAME, or signal a `user-error' naming it."
  (let ((position (org-babel-find-named-block name)))
    (unless position
      (ob-chat-ai--user-error ":tools names %s, but no source block has #+name: %s"
                              name name))
    (goto-char position)))

(defun ob-chat-ai-tools--function (name)
  "Return the tools array entry of the block named NAME."
  (unless (string-match-p ob-chat-ai-tools--name-regexp name)
    (ob-chat-ai--user-error "Tool block %s cannot be offered: the API takes names \
of 1 to 64 letters, digits, _ and - only" name))
  (org-with-wide-buffer
   (ob-chat-ai-tools--goto name)
   (let* ((info (org-babel-get-src-block-info 'no-eval))
          (description (ob-chat-ai-tools--description))
          (properties
           (mapcar (lambda (var)
                     (cons (car var) (ob-chat-ai-tools--schema (cdr var))))
                   (ob-chat-ai-tools--defaults (nth 2 info)))))
     `((type . "function")
       (function
        (name . ,name)
        ,@(and description `((description . ,description)))
        (parameters (type . "object") (properties . ,properties)))))))

(defun ob-chat-ai-tools--defaults (params)
  "Return the :var names of PARAMS with their defaults as written, unresolved."
  (delq nil
        (mapcar (lambda (var)
                  (cond
                   ((consp var) var)
                   ((string-match "\\`[ \t]*\\([^= \t\n]+\\)[ \t]*=[ \t]*\\(.*\\)\\'" var)
                    (cons (intern (match-string 1 var)) (match-string 2 var)))))
                (org-babel--get-vars params))))

(defun ob-chat-ai-tools--schema (default)
  "Return the JSON schema of a parameter whose default value is DEFAULT.
DEFAULT is what the :var header arg says, a reference unresolved: a
number gives a number, a table, a list or a named table an array of
rows, anything else a string."
  (let ((cell '((type . ["string" "number"]))))
    (cond
     ((numberp default) '((type . "number")))
     ((and (consp default) (seq-some #'listp default))
      `((type . "array") (items (type . "array") (items . ,cell))))
     ((consp default) `((type . "array") (items . ,cell)))
     ((not (stringp default)) '((type . "string")))
     ((string-match-p "\\`[-+]?[0-9]+\\(\\.[0-9]*\\)?\\([eE][-+]?[0-9]+\\)?\\'"
                      (string-trim default))
      '((type . "number")))
     ((string-match-p "\\`[ \t]*'?(" default)
      `((type . "array") (items . ,cell)))
     ((ob-chat-ai-tools--named-table-p (string-trim default))
      `((type . "array") (items (type . "array") (items . ,cell))))
     (t '((type . "string"))))))

(defun ob-chat-ai-tools--named-table-p (name)
  "Return non-nil when NAME is the #+name: of a table in the buffer."
  (org-element-map (org-element-parse-buffer 'element) 'table
    (lambda (table) (equal (org-element-property :name table) name))
    nil t))

(defun ob-chat-ai-tools--description ()
  "Return the description of the block at point, or nil.
That is its #+caption:, else the paragraph just above it."
  (let* ((element (org-element-at-point))
         (caption (org-element-property :caption element)))
    (ob-chat-ai--nonempty
     (if caption
         (mapconcat (lambda (entry)
                      (substring-no-properties
                       (org-element-interpret-data (car entry))))
                    (reverse caption) " ")
       (save-excursion
         (goto-char (org-element-property :begin element))
         (skip-chars-backward " \t\n")
         (unless (bobp)
           (let ((above (org-element-at-point)))
             (when (and (eq (org-element-type above) 'paragraph)
                        (= (org-element-property :end above)
                           (org-element-property :begin element)))
               (buffer-substring-no-properties
                (org-element-property :contents-begin above)
                (org-element-property :contents-end above))))))))))

(declare-function ob-chat-ai--nonempty "ob-chat-ai" (text))

;;;; Running a call

(defun ob-chat-ai-tools-confirm (call)
  "Return t when the tool CALL may run, nil when the user declines.
CALL is a tool_call event.  In batch Emacs, signal nothing and
return the symbol `batch' while confirmation is on."
  (let ((name (alist-get 'name call)))
    (cond
     ((not ob-chat-ai-confirm-tools) t)
     ((member name ob-chat-ai-tools--always) t)
     (noninteractive 'batch)
     (t
      (pcase (car (let ((ob-chat-ai-tools--asking t))
                    (read-multiple-choice
                   (format "chat-ai: run tool %s %s? " name
                           (truncate-string-to-width
                            (alist-get 'arguments call) 200 nil nil "…"))
                   '((?y "yes" "run the block with these arguments")
                     (?n "no" "tell the model that you declined")
                     (?a "always" "run this block's calls in this buffer without asking")))))
        (?y t)
        (?a (push name ob-chat-ai-tools--always) t)
        (_ nil))))))

(defun ob-chat-ai-tools-run (call)
  "Run the block that tool CALL names with its arguments; return the value as text.
A block that fails or returns nothing gives the text of the error, and
so does a block called while it runs already, by itself or through
other tool blocks, which would never end."
  (condition-case err
      (let* ((name (alist-get 'name call))
             (running (cons (current-buffer) name))
             (arguments (ob-chat-ai-tools--arguments call))
             (value (org-with-wide-buffer
                     (ob-chat-ai-tools--goto name)
                     (ob-chat-ai-tools--check-arguments name arguments)
                     (when (member running ob-chat-ai-tools--running)
                       (error "The block %s is running already: a tool block \
cannot call itself, directly or through other tools" name))
                     (let ((org-babel-current-src-block-location nil)
                           (ob-chat-ai-tools--running
                            (cons running ob-chat-ai-tools--running)))
                       (org-babel-execute-src-block
                        nil nil
                        (append (mapcar (lambda (argument) (cons :var argument))
                                        arguments)
                                '((:results . "silent"))))))))
        (if (or (null value) (equal value ""))
            (format "Error: the block %s returned nothing" name)
          (ob-chat-ai-messages--value-text value)))
    (error (format "Error: %s" (error-message-string err)))))

(defun ob-chat-ai-tools--arguments (call)
  "Return the arguments of tool CALL as (NAME . VALUE) pairs for :var."
  (let ((object (condition-case nil
                    (json-parse-string (alist-get 'arguments call)
                                       :object-type 'alist :array-type 'list
                                       :null-object nil :false-object nil)
                  (json-error
                   (error "The arguments are not valid JSON: %s"
                          (alist-get 'arguments call))))))
    (unless (listp object)
      (error "The arguments are not a JSON object: %s" (alist-get 'arguments call)))
    object))

(defun ob-chat-ai-tools--check-arguments (name arguments)
  "Signal an error when ARGUMENTS name a parameter the block NAME at point lacks."
  (let ((known (mapcar #'car (ob-chat-ai-tools--defaults
                              (nth 2 (org-babel-get-src-block-info 'no-eval))))))
    (dolist (argument arguments)
      (unless (memq (car argument) known)
        (error "The block %s has no parameter %s; its parameters are: %s"
               name (car argument)
               (if known (mapconcat #'symbol-name known ", ") "none"))))))

;;;; The conversation

(defun ob-chat-ai-tools-exchange (envelope params send record)
  "Send ENVELOPE with SEND, running the tools the model asks for, as PARAMS say.
SEND is called with an envelope and returns a plist with the :calls
and the :final event of its reply (see `ob-chat-ai--send-sync').
While the reply of a request that offers tools only calls them, each
call is confirmed and run, and the conversation goes on in a new
request, until the model answers in text, the user's batch Emacs
cannot confirm, or :max-tool-rounds is reached.  RECORD is called
with the records of the calls, (ROUND CALL VALUE) lists in order,
followed by a note when the calls stopped short.  Return what SEND
returned last."
  (let ((offered (alist-get 'tools (alist-get 'body envelope)))
        (limit (ob-chat-ai-tools-max-rounds params))
        (round 0)
        (records nil)
        (note nil)
        (turn (funcall send envelope)))
    (while (and offered (not note)
                (equal (alist-get 'type (plist-get turn :final)) "done")
                (ob-chat-ai-tools-calls turn))
      (if (>= round limit)
          (setq note (ob-chat-ai-tools-round-limit-note round))
        (cl-incf round)
        (let* ((calls (ob-chat-ai-tools-calls turn))
               (answers (ob-chat-ai-tools-answer calls round offered)))
          (if (stringp answers)
              (setq note answers)
            (setq records (append records answers)
                  envelope (ob-chat-ai-tools-continue
                            envelope
                            (ob-chat-ai-tools-messages
                             calls (mapcar (lambda (answer) (nth 2 answer)) answers)))
                  turn (funcall send envelope))))))
    (funcall record (append records (and note (list note))))
    turn))

(defun ob-chat-ai-tools-calls (turn)
  "Return each tool call of the first choice of TURN, its arguments on one line.
Arguments that the model wrote on several lines are sent back, and
recorded, as compact JSON."
  (mapcar (lambda (call)
            (let ((arguments (alist-get 'arguments call)))
              (if (not (string-search "\n" arguments))
                  call
                (cons (cons 'arguments
                            (condition-case nil
                                (json-serialize
                                 (json-parse-string arguments :null-object :null
                                                    :false-object :false))
                              (error (replace-regexp-in-string "[\r\n]+" " " arguments))))
                      call))))
          (seq-filter (lambda (call) (eql (alist-get 'choice call) 0))
                      (plist-get turn :calls))))

(defun ob-chat-ai-tools-messages (requested values)
  "Return the messages that tell the model what REQUESTED gave: VALUES.
That is the assistant message with the calls, then one tool message
per call, as the chat-completions API takes them."
  (cons `((role . "assistant")
          (content . :null)
          (tool_calls
           . ,(vconcat
               (mapcar (lambda (call)
                         `((id . ,(alist-get 'call_id call))
                           (type . "function")
                           (function (name . ,(alist-get 'name call))
                                     (arguments . ,(alist-get 'arguments call)))))
                       requested))))
        (cl-mapcar (lambda (call value)
                     `((role . "tool")
                       (tool_call_id . ,(alist-get 'call_id call))
                       (content . ,value)))
                   requested values)))

(defun ob-chat-ai-tools-continue (envelope messages)
  "Return ENVELOPE with MESSAGES added at the end of its body's messages."
  (let* ((body (copy-alist (alist-get 'body envelope)))
         (new (copy-alist envelope)))
    (setf (alist-get 'messages body)
          (vconcat (alist-get 'messages body) messages))
    (setf (alist-get 'body new) body)
    new))

(defun ob-chat-ai-tools-offered-names (tools)
  "Return the function names of TOOLS, a tools array."
  (mapcar (lambda (tool) (alist-get 'name (alist-get 'function tool)))
          tools))

(defun ob-chat-ai-tools-answer (requested round offered)
  "Return the record of each tool call REQUESTED in ROUND, or a note.
Each call of a block among OFFERED, the tools array of the request,
is confirmed, then run; a call of any other name runs nothing and
the model is told so.
The records are (ROUND CALL VALUE) lists, in order.  When confirmation
is on in batch Emacs, nothing runs: return the note saying so."
  (let* ((names (ob-chat-ai-tools-offered-names offered))
         (answers (mapcar (lambda (call)
                            (if (member (alist-get 'name call) names)
                                (ob-chat-ai-tools-confirm call)
                              'refused))
                          requested)))
    (if (memq 'batch answers)
        (ob-chat-ai-reply-note
         "the model asked to run %s; batch Emacs cannot confirm tool calls \
(ob-chat-ai-confirm-tools), so none ran"
         (mapconcat (lambda (call)
                      (format "%s %s" (alist-get 'name call) (alist-get 'arguments call)))
                    requested ", "))
      (cl-mapcar (lambda (call answer)
                   (list round call
                         (cond
                          ((eq answer 'refused)
                           (format "Error: this block offers no tool %s; it offers: %s"
                                   (alist-get 'name call) (string-join names ", ")))
                          (answer
                           (message "chat-ai: running tool %s..." (alist-get 'name call))
                           (ob-chat-ai-tools-run call))
                          (t "The user declined to run this tool."))))
                 requested answers))))

(defun ob-chat-ai-tools-round-limit-note (rounds)
  "Return the note of a block whose model still called tools after ROUNDS rounds."
  (ob-chat-ai-reply-note
   "the model still asked for tools after %d round%s (:max-tool-rounds); stopped"
   rounds (if (= rounds 1) "" "s")))

(provide 'ob-chat-ai-tools)

;;; ob-chat-ai-tools.el ends here
